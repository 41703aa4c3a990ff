"""Swarm benchmark: a tracker and peers as separate processes on loopback, three scenarios timed end to end.

    python bench/swarm.py [--size-mib 1024] [--chunk-size 1048576] [--pipeline-depth N]

* ``one_to_one``: 1 seeder -> 1 downloader;
* ``four_to_one``: 4 seeders -> 1 downloader;
* ``one_to_four``: 1 seeder -> 4 simultaneous downloaders (until all four are done);
* ``one_to_one_tls``: ``one_to_one`` in a private swarm (``--swarm``: TLS 1.3 and the proof of
  membership on every connection). ``--encrypted`` runs ``one_to_one`` and it, one after the
  other, and adds ``tls_cost``: the encrypted figure against the open one.

A scenario's time runs from the downloaders' start (process spawn) until the
last one has logged its verified file in place. The last line printed is one
JSON object with, per scenario, ``seconds``, ``mib_per_s`` (bytes of the file
times downloaders, per second) and ``bytes_served`` per peer label (from the
peers' own counters, logged when they are stopped); ``one_to_four`` also has
``served_by_downloaders`` and its share of all bytes. ``cpu_seconds`` is each
process's user + system time.

On a VM whose balloon driver reports free pages to the host, writing a file
into never-touched (or returned) memory costs several times more system time
than into recently freed pages: compare runs side by side, and expect the
first scenario of a run to pay most of it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Every checkout's compiled modules, kept apart from it: an installed chunkswarm has its .pyc files, and a shell
#: with PYTHONDONTWRITEBYTECODE would otherwise have each peer process compile every module it imports (0.3-0.5 CPU-s).
PYC_ENV = {"PYTHONPYCACHEPREFIX": str(pathlib.Path(tempfile.gettempdir()) / "chunkswarm-bench-pycache")}
sys.path.insert(0, str(ROOT))

from peer.config import PeerConfig  # noqa: E402


class Proc:
    """A child process whose stderr lines are collected by a thread, with arrival times."""

    def __init__(self, args: list[str], label: str) -> None:
        self.label = label
        self.lines: list[tuple[float, str]] = []
        self.started = time.monotonic()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", **PYC_ENV}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: compiled once, not by every process (see PYC_ENV)
        self.popen = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env, text=True)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 600.0) -> tuple[float, re.Match[str]]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for stamp, line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return stamp, match
                seen = len(self.lines)
                if self.popen.poll() is not None and not self._thread.is_alive():
                    raise RuntimeError(f"{self.label} exited ({self.popen.returncode}) before {pattern!r}:\n" + "\n".join(text for _, text in self.lines[-20:]))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.label}: no {pattern!r} within {timeout} s")
                self._cond.wait(min(remaining, 0.5))

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (Linux /proc), 0 if unknown."""
        try:
            fields = pathlib.Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._thread.join(5)

    def uploaded(self) -> int:
        for _, line in reversed(self.lines):
            match = re.search(r"uploaded .*?(\d+) bytes", line)  # "... uploaded 1024 chunks (1.0 GiB, 1073741824 bytes) to ..."
            if match:
                return int(match.group(1))
        return 0


def make_file(path: pathlib.Path, size: int) -> None:
    block = 16 * 1024 * 1024
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(block, left)
            handle.write(os.urandom(n))
            left -= n


def peer_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "chunkswarm", *args]


def run_scenario(name: str, seeders: int, downloaders: int, data: pathlib.Path, work: pathlib.Path, options: argparse.Namespace,
                 encrypted: bool = False) -> dict[str, Any]:  # fmt: skip
    scenario_dir = work / name
    shutil.rmtree(scenario_dir, ignore_errors=True)
    scenario_dir.mkdir()
    private: list[str] = []
    if encrypted:
        swarm_file = scenario_dir / "bench.swarm"
        subprocess.run(peer_args("swarm", "init", str(swarm_file)), check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        private = ["--swarm", str(swarm_file)]
    # Start from a clean page cache state: no writeback of earlier scenarios in this one's time.
    os.sync()
    tracker = Proc([sys.executable, "-m", "chunkswarm", "tracker", "--port", "0", "--db", str(scenario_dir / "tracker.db"),
                    "--heartbeat-interval", "5", "--peer-timeout", "30", *private], "tracker")
    procs = [tracker]
    try:
        _, match = tracker.wait_for(r"tracker listening on (\S+)", 30)
        address = match.group(1)
        common = ["--tracker", address, "--log-level", options.log_level, *private]
        tuning = ["--pipeline-depth", str(options.pipeline_depth)] if options.pipeline_depth else []
        tuning += ["--direct-io"] if options.direct_io else []
        seeds = []
        for i in range(seeders):
            label = f"seed-{i + 1}"
            seeds.append(Proc(peer_args("seed", str(data), "--chunk-size", str(options.chunk_size), "--state-dir", str(work / "seed-state"),
                                        "--label", label, *common), label))
            # One at a time: the first hashes the file, the others find its manifest in the shared cache.
            seeds[-1].wait_for(r"seeding ", 600)
        procs += seeds
        getters = []
        start = time.monotonic()
        for i in range(downloaders):
            label = f"get-{i + 1}"
            out = scenario_dir / label
            getters.append(Proc(peer_args("get", data.name, "-o", f"{out}/", "--seed", "--state-dir", str(scenario_dir / f"{label}-state"),
                                          "--label", label, *tuning, *common), label))
        procs += getters
        finished = []
        for getter in getters:
            stamp, _ = getter.wait_for(r"\S -> \S.* in [0-9.]+ s", 900)  # get's summary: "NAME -> PATH (SIZE in SECONDS s, ...)"
            finished.append(stamp)
        seconds = max(finished) - start
        cpu = {proc.label: round(proc.cpu_seconds(), 2) for proc in procs}
        for getter in getters:
            assert os.path.getsize(scenario_dir / getter.label / data.name) == os.path.getsize(data)
            # Stopped only once it catches SIGTERM (it says so), or it dies without logging its uploads.
            getter.wait_for(r"serving on ", 60)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if options.log_dir is not None:
            options.log_dir.mkdir(parents=True, exist_ok=True)
            for proc in procs:
                (options.log_dir / f"{name}-{proc.label}.log").write_text("\n".join(line for _, line in proc.lines) + "\n")
    size = os.path.getsize(data)
    served = {proc.label: proc.uploaded() for proc in procs[1:]}
    if not all(any(" uploaded " in line for _, line in proc.lines) for proc in procs[1:]):
        raise RuntimeError("a peer stopped without logging what it uploaded: its share would read as 0")
    result: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "mib_per_s": round(size * downloaders / seconds / 2**20, 1),
        "bytes_served": served,
        "per_downloader_seconds": [round(s - start, 3) for s in finished],
        "cpu_seconds": cpu,
    }
    if downloaders > 1:
        by_downloaders = sum(v for k, v in served.items() if k.startswith("get-"))
        total = sum(served.values())
        result["served_by_downloaders"] = by_downloaders
        result["downloader_share"] = round(by_downloaders / total, 3) if total else 0.0
    shutil.rmtree(scenario_dir, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-size", type=int, default=1024 * 1024)
    parser.add_argument("--pipeline-depth", type=int, default=0, help="requests in flight per connection (0: the peer's default)")
    parser.add_argument("--direct-io", action="store_true", help="downloaders write past the page cache (get --direct-io)")
    parser.add_argument("--scenarios", default="one_to_one,four_to_one,one_to_four")
    parser.add_argument("--encrypted", action="store_true", help="run one_to_one open and encrypted (one_to_one_tls) only")
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    parser.add_argument("--log-dir", type=pathlib.Path, default=None, help="write every process's log to DIR/SCENARIO-LABEL.log")
    parser.add_argument("--log-level", default="INFO", help="log level of the peers (DEBUG: one line per chunk)")
    options = parser.parse_args()
    work = options.workdir or pathlib.Path(tempfile.mkdtemp(prefix="chunkswarm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "payload.bin"
    size = options.size_mib * 2**20
    if not data.exists() or data.stat().st_size != size:
        print(f"writing {options.size_mib} MiB of random data to {data}", file=sys.stderr)
        make_file(data, size)
    plan = {"one_to_one": (1, 1, False), "four_to_one": (4, 1, False), "one_to_four": (1, 4, False), "one_to_one_tls": (1, 1, True)}
    if options.encrypted:
        options.scenarios = "one_to_one,one_to_one_tls"
    depth = options.pipeline_depth or PeerConfig().pipeline_depth
    results: dict[str, Any] = {"size_mib": options.size_mib, "chunk_size": options.chunk_size, "pipeline_depth": depth, "direct_io": options.direct_io,
                               "load_average": os.getloadavg()[0]}
    try:
        for name in options.scenarios.split(","):
            seeders, downloaders, encrypted = plan[name]
            print(f"{name}: {seeders} seeder(s) -> {downloaders} downloader(s)", file=sys.stderr)
            results[name] = run_scenario(name, seeders, downloaders, data, work, options, encrypted)
            print(f"  {json.dumps(results[name])}", file=sys.stderr)
        if "one_to_one" in results and "one_to_one_tls" in results:
            open_rate, tls_rate = results["one_to_one"]["mib_per_s"], results["one_to_one_tls"]["mib_per_s"]
            results["tls_cost"] = {"throughput_ratio": round(tls_rate / open_rate, 3), "slower_by_percent": round(100 * (1 - tls_rate / open_rate), 1)}
    finally:
        if options.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
