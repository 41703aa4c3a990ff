"""Does an open stats page slow the tracker? ``bench/tracker.py``'s load, with and without dashboards polling, in one run.

    python bench/dashboard.py [--peers 1000] [--files 100] [--chunks 1000] [--seconds 10] [--rate 20000] [--dashboards 1]

One tracker process (``chunkswarm tracker --port 0``, its web UI on a free
port) and the simulated peers of ``bench/tracker.py``; after the set-up,
timed phases over the same connections, each ``--seconds`` long:
saturated without a dashboard and with ``--dashboards`` stats pages open,
alternately, ``--rounds`` of each; then paced at ``--rate`` likewise. An open stats page is what
the page's script does: GET ``/stats/panel`` every 2 s (``POLL_SECONDS``),
each dashboard in a thread of its own on a keep-alive connection, at a
random phase.

The last line printed is one JSON object: the figures of each phase side by
side (``without_*`` and ``with_*``: requests/s, p50/p99/max latency in ms,
tracker CPU µs per request), the dashboards' own panel latency, and the
machine's load average at the start.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import pathlib
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from types import ModuleType
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tracker.web.pages import POLL_SECONDS  # noqa: E402


def _load_tracker_bench() -> ModuleType:
    """bench/tracker.py, whose simulated peers and tracker process this reuses (its name is the tracker package's)."""
    spec = importlib.util.spec_from_file_location("bench_tracker", ROOT / "bench" / "tracker.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_bench = _load_tracker_bench()
LoadGenerator, TrackerProcess, tracker_caps = _bench.LoadGenerator, _bench.TrackerProcess, _bench.tracker_caps


class Dashboard(threading.Thread):
    """One open stats page: its panel fetched every POLL_SECONDS over one keep-alive connection."""

    def __init__(self, url: str, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.stop = stop
        self.rng = random.Random(seed)
        self.latencies: list[float] = []
        self.errors = 0

    def run(self) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        self.stop.wait(self.rng.uniform(0, POLL_SECONDS))
        while not self.stop.is_set():
            began = time.perf_counter()
            try:
                connection.request("GET", "/stats/panel")
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or b"peers" not in body:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                connection.close()
                connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.latencies.append(time.perf_counter() - began)
            self.stop.wait(POLL_SECONDS)
        connection.close()


def web_url(tracker: Any) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in tracker.lines:
            found = re.search(r"web UI at (http://\S+/)", line)
            if found:
                return found.group(1)
        time.sleep(0.05)
    raise SystemExit("the tracker started no web UI:\n" + "\n".join(tracker.lines))


def phase(load: Any, tracker: Any, url: str, mode: str, with_dashboard: bool, args: argparse.Namespace, panel: list[float]) -> dict[str, float]:
    """One timed phase of ``mode`` ("saturated" or "paced"), with ``args.dashboards`` stats pages open or none."""
    stop = threading.Event()
    dashboards = [Dashboard(url, stop, args.seed + i) for i in range(args.dashboards if with_dashboard else 0)]
    for dashboard in dashboards:
        dashboard.start()
    cpu_before, own_before = tracker.cpu_seconds(), _bench._own_cpu()
    elapsed = load.saturated(args.seconds) if mode == "saturated" else load.paced(args.seconds, args.rate)
    cpu = (load.cpu_at_end[0] - cpu_before) / elapsed
    stop.set()
    for dashboard in dashboards:
        dashboard.join(15)
        panel += dashboard.latencies
        if dashboard.errors:
            raise SystemExit(f"a dashboard's panel fetch failed {dashboard.errors} times")
    figures: dict[str, float] = load.figures(elapsed, "")
    figures["tracker_cpu_pct"] = round(cpu * 100)
    figures["tracker_cpu_us_per_request"] = round(cpu * 1e6 / max(1, figures["requests_per_s"]), 1)
    figures["loadgen_cpu_pct"] = round((load.cpu_at_end[1] - own_before) / elapsed * 100)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _bench.add_load_arguments(parser)
    parser.add_argument("--dashboards", type=int, default=1, help="stats pages open during the 'with' phases")
    parser.add_argument("--rounds", type=int, default=3, help="phases of each kind, with and without, alternating")
    args = parser.parse_args()
    args.trace = None
    _bench._raise_fd_limit(args.peers + 512)
    load_average = os.getloadavg()[0]
    result: dict[str, object] = {"peers": args.peers, "files": args.files, "chunks_per_file": args.chunks, "dashboards": args.dashboards,
                                 "dashboard_poll_s": POLL_SECONDS, "seconds_per_phase": args.seconds, "load_average_at_start": round(load_average, 2)}  # fmt: skip
    panel: list[float] = []
    with tempfile.TemporaryDirectory(prefix="chunkswarm-bench-") as tmp:
        tracker = TrackerProcess(os.path.join(tmp, "tracker.db"), 30.0, tracker_caps(args.peers))
        try:
            url = web_url(tracker)
            load = LoadGenerator(tracker.port, args, tracker.cpu_seconds)
            load.setup()
            for mode in ("saturated", "paced"):
                runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
                for round_ in range(args.rounds):
                    # Alternating, without-with then with-without: a shared machine's drift falls on both alike.
                    for with_dashboard in (False, True) if round_ % 2 == 0 else (True, False):
                        figures = phase(load, tracker, url, mode, with_dashboard, args, panel)
                        runs[with_dashboard].append(figures)
                        print(mode, "with" if with_dashboard else "without", json.dumps(figures), file=sys.stderr)
                for with_dashboard, figures_list in runs.items():
                    prefix = ("with_" if with_dashboard else "without_") + mode + "_"
                    for key in figures_list[0]:
                        result[prefix + key] = round(statistics.median(f[key] for f in figures_list), 2)
                    result[prefix + "requests_per_s_each_round"] = [f["requests_per_s"] for f in figures_list]
        finally:
            code = tracker.stop()
    panel.sort()
    result.update({
        "panel_fetches": len(panel),
        "panel_p50_ms": round(panel[len(panel) // 2] * 1000, 1) if panel else 0.0,
        "panel_max_ms": round(panel[-1] * 1000, 1) if panel else 0.0,
        "load_errors": load.errors,
        "tracker_exit_code": code,
    })  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
