"""Collection benchmark: a folder of many small files published and fetched, as separate processes on loopback.

    python bench/collection.py [--files 2000] [--folders 20] [--min-kb 1] [--max-kb 20]

* ``seed``: ``chunkswarm seed DIR --no-watch`` (one PUBLISH/ANNOUNCE round trip per file), from spawn
  until it has logged every file as seeded: the way to share a folder before collections;
* ``publish``: ``chunkswarm publish DIR --collection NAME`` (files hashed in parallel threads, every
  PUBLISH, ANNOUNCE and the PUBLISH_COLLECTION in one pipelined write), from spawn until it logs the
  version published;
* ``get``: ``chunkswarm get --collection NAME -o OUT`` from the publishing node, spawn to exit,
  every file fetched concurrently and checked against the version's root.

Each scenario starts from empty state folders (no manifest cache). The last line printed is one
JSON object with ``seconds`` and ``files_per_s`` per scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "chunkswarm", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "COLUMNS": "250"})  # fmt: skip


def _wait_for(process: subprocess.Popen[str], pattern: str, count: int = 1) -> str:
    """Read the process's log until ``pattern`` has matched ``count`` lines; the last match's line."""
    assert process.stderr is not None
    regex = re.compile(pattern)
    seen = 0
    for line in process.stderr:
        if regex.search(line):
            seen += 1
            if seen == count:
                threading.Thread(target=lambda: [None for _ in process.stderr or ()], daemon=True).start()  # drained from now on
                return line
    raise RuntimeError(f"exited before logging {pattern!r} {count} times")


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def _make_tree(folder: pathlib.Path, files: int, folders: int, min_kb: int, max_kb: int) -> int:
    rng = random.Random(7)
    total = 0
    for i in range(files):
        path = folder / f"d{i % folders:03d}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(min_kb * 1000, max_kb * 1000)
        path.write_bytes(rng.randbytes(size))
        total += size
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--folders", type=int, default=20)
    parser.add_argument("--min-kb", type=int, default=1)
    parser.add_argument("--max-kb", type=int, default=20)
    options = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-collection-"))
    results: dict[str, dict[str, float]] = {}
    try:
        data = work / "data"
        total = _make_tree(data, options.files, options.folders, options.min_kb, options.max_kb)
        tracker = _spawn("tracker", "--port", "0", "--db", str(work / "t.db"), "--no-mdns")
        try:
            found = re.search(r"tracker listening on 127\.0\.0\.1:(\d+)", _wait_for(tracker, r"tracker listening on"))
            assert found
            address = f"127.0.0.1:{found.group(1)}"

            def timed(name: str, count: float) -> None:
                seconds = time.monotonic() - started
                results[name] = {"seconds": round(seconds, 3), "files_per_s": round(count / seconds, 1)}
                print(f"{name}: {seconds:.2f} s", file=sys.stderr)

            started = time.monotonic()
            seeder = _spawn("seed", str(data), "--no-watch", "--tracker", address, "--state-dir", str(work / "seed-state"))
            _wait_for(seeder, r"seeding f\d+\.bin", options.files)
            timed("seed", options.files)
            _stop(seeder)
            started = time.monotonic()
            publisher = _spawn("publish", str(data), "--collection", "bench", "--tracker", address, "--state-dir", str(work / "pub-state"))
            _wait_for(publisher, r"published at version 1")
            timed("publish", options.files)
            try:
                started = time.monotonic()
                getter = _spawn("get", "--collection", "bench", "-o", str(work / "out"), "--tracker", address,
                                "--state-dir", str(work / "get-state"))  # fmt: skip
                _, errors = getter.communicate(timeout=600)
                if getter.returncode != 0:
                    raise RuntimeError(f"get failed: {errors[-2000:]}")
                timed("get", options.files)
                results["get"]["mib_per_s"] = round(total / 2**20 / results["get"]["seconds"], 2)
            finally:
                _stop(publisher)
        finally:
            _stop(tracker)
        results["workload"] = {"files": options.files, "folders": options.folders, "bytes": total}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
