"""The web API's latency over a large catalogue: ``GET /api/v1/files?q=...`` against a tracker listing 100,000 files.

    python bench/web_api.py [--files 100000] [--requests 300] [--holders 50]

A tracker (``serve_tracker``, its web UI on a free port) runs in a child
process; its registry is filled directly (``Registry.publish``, as loading a
catalogue does), ``--holders`` peers each holding the newest 1,000 files, so
a page of results carries holders. This process then asks, one request at a
time on a keep-alive connection, ``--requests`` times each: every file (the
first page of all 100,000), a word in 1% of the names, a name that matches
once, nothing, an id prefix, a page deep in the catalogue, and one file with
its availability picture. Each search scans the whole catalogue (yielding to
the protocol's connections every 2,000 files).

The last line printed is one JSON object: p50/p99/max in ms per kind and
over all, the first search's time (it indexes the catalogue's names, once),
and the machine's load average at the start.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing
import os
import pathlib
import sys
import time
import urllib.parse
from multiprocessing.connection import Connection
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = [f"w{i:02d}x" for i in range(100)]


def name_of(i: int) -> str:
    return f"file-{i:06d}-{WORDS[i % len(WORDS)]}.bin"


def _tracker(files: int, holders: int, pipe: Connection) -> None:
    import trio

    from common.manifest import Manifest
    from tracker.config import TrackerConfig
    from tracker.service import serve_tracker

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve_tracker, TrackerConfig(port=0, http_host="127.0.0.1", max_peers_per_ip=holders + 1))
            registry = running.service.registry
            manifests = []
            for i in range(files):
                hashes = [hashlib.sha256(b"%d-%d" % (i, c)).digest() for c in range(4)]
                manifest = Manifest.from_hashes(name_of(i), 4 * 1024, 1024, hashes)
                registry.publish(manifest, checked=True)
                manifests.append(manifest)
            for h in range(holders):
                peer, _ = registry.register(os.urandom(20), "127.0.0.1", 20000 + h)
                for manifest in manifests[-1000:]:
                    registry.announce(peer, manifest.file_id, ((0, 4 if h % 2 else 2),))
            pipe.send((running.http_url, manifests[-1].hex_id, manifests[files // 2].hex_id[:6]))
            await trio.to_thread.run_sync(pipe.recv)  # until the parent is done
            nursery.cancel_scope.cancel()

    trio.run(main)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    parser.add_argument("--holders", type=int, default=50)
    args = parser.parse_args()
    load_average = os.getloadavg()[0]
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_tracker, args=(args.files, args.holders, child), daemon=True)
    began = time.perf_counter()
    process.start()
    url, newest_id, prefix = parent.recv()
    setup_s = time.perf_counter() - began
    split = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(split.hostname, split.port, timeout=30)
    kinds = {
        "all_first_page": "/api/v1/files?q=",
        "word_in_1pct": f"/api/v1/files?q={WORDS[7].upper()}",
        "one_match": f"/api/v1/files?q={name_of(args.files // 3)}",
        "no_match": "/api/v1/files?q=nothing-like-this",
        "id_prefix": f"/api/v1/files?q={prefix}",
        "deep_page": f"/api/v1/files?q=&offset={args.files - 50}&limit=20",
        "one_file": f"/api/v1/files/{newest_id}",
    }
    # The first search builds the name index (tracker/web/names.py) over the whole catalogue: timed on its own.
    start = time.perf_counter()
    connection.request("GET", "/api/v1/files?q=cold")
    connection.getresponse().read()
    cold_ms = round((time.perf_counter() - start) * 1000, 2)
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    totals: dict[str, Any] = {}
    for _ in range(args.requests):
        for kind, path in kinds.items():
            start = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            latencies[kind].append(time.perf_counter() - start)
            if response.status != 200:
                raise SystemExit(f"{path}: {response.status} {body[:200]!r}")
            totals[kind] = json.loads(body).get("total", 1)
    parent.send("done")
    process.join(30)
    everything = [value for values in latencies.values() for value in values]
    result: dict[str, Any] = {"files": args.files, "requests": len(everything), "holders_of_newest_1000": args.holders, "setup_s": round(setup_s, 1),
                           "first_search_ms": cold_ms}
    for kind, values in latencies.items():
        result[f"{kind}_matches"] = totals[kind]
        result[f"{kind}_p50_ms"] = percentile(values, 50)
        result[f"{kind}_p99_ms"] = percentile(values, 99)
        result[f"{kind}_max_ms"] = percentile(values, 100)
    result.update({"p50_ms": percentile(everything, 50), "p99_ms": percentile(everything, 99), "max_ms": percentile(everything, 100),
                   "load_average_at_start": round(load_average, 2)})  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
