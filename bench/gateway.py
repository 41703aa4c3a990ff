"""Gateway benchmark: curl through a peer's HTTP gateway, side by side with ``chunkswarm get`` of the same file, one run.

    python bench/gateway.py [--size-mib 1024] [--runs 2] [--chunk-size N]

A tracker and a seeder that holds the file and runs a gateway (``seed --http``), and a second peer
with a gateway that holds nothing (``seed EMPTY --http``), all separate processes on 127.0.0.1. Each run:

* ``held``: ``curl -o /dev/null`` of the file from the seeder's gateway (read from disk, every chunk verified);
* ``get``: ``chunkswarm get`` of the file from the seeder (process start to its summary line);
* ``on_demand``: ``curl -o /dev/null`` of the file from the empty peer's gateway, which fetches it from the
  seeder and streams it as its chunks verify (its copy is removed after each run, so each run fetches).

curl's own figures (``time_total``, bytes received) give the gateway rates. The last line printed is one
JSON object: per measure, ``mib_per_s`` and ``seconds`` of every run, with the load average at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.swarm import Proc, make_file, peer_args  # noqa: E402


def curl(url: str) -> tuple[int, float]:
    """Bytes received and seconds taken by ``curl -o /dev/null url`` (curl's own clock)."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download} %{time_total} %{http_code}", url],
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    if out[2] != "200":
        raise RuntimeError(f"curl {url}: HTTP {out[2]}")
    return int(out[0]), float(out[1])


def rate(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=0, help="the seeder's chunk size (0: chunkswarm's choice for the size)")
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    options = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("bench/gateway.py needs curl (Debian: apt-get install curl)")
    work = options.workdir or pathlib.Path(tempfile.mkdtemp(prefix="chunkswarm-gateway-bench-"))
    share, empty = work / "share", work / "empty"
    for folder in (share, empty):
        folder.mkdir(parents=True, exist_ok=True)
    data = share / "payload.bin"
    size = options.size_mib * 2**20
    if not data.exists() or data.stat().st_size != size:
        print(f"writing {options.size_mib} MiB of random data to {data}", file=sys.stderr)
        make_file(data, size)
    chunking = ["--chunk-size", str(options.chunk_size)] if options.chunk_size else []
    results: dict[str, Any] = {"size_mib": options.size_mib, "load_average": os.getloadavg()[0], "held": [], "get": [], "on_demand": []}
    procs: list[Proc] = []
    try:
        tracker = Proc(peer_args("tracker", "--port", "0", "--db", str(work / "tracker.db")), "tracker")
        procs.append(tracker)
        address = tracker.wait_for(r"tracker listening on (\S+)", 30)[1].group(1)
        seeder = Proc(peer_args("seed", str(share), "--no-watch", "--http", "127.0.0.1:0", "--state-dir", str(work / "seed-state"),
                                "--label", "seeder", "--tracker", address, *chunking), "seeder")  # fmt: skip
        procs.append(seeder)
        held_url = seeder.wait_for(r"HTTP gateway on (\S+)", 60)[1].group(1) + data.name
        seeder.wait_for(r"seeding payload\.bin", 600)
        gateway = Proc(peer_args("seed", str(empty), "--no-watch", "--http", "127.0.0.1:0", "--http-dir", str(work / "fetched"),
                                 "--state-dir", str(work / "gateway-state"), "--label", "gateway", "--tracker", address), "gateway")  # fmt: skip
        procs.append(gateway)
        fetch_url = gateway.wait_for(r"HTTP gateway on (\S+)", 60)[1].group(1) + data.name
        gateway.wait_for(r"connected to the tracker", 60)
        for run in range(options.runs):
            print(f"run {run + 1} of {options.runs}", file=sys.stderr)
            os.sync()
            nbytes, seconds = curl(held_url)
            assert nbytes == size, nbytes
            results["held"].append({"mib_per_s": rate(size, seconds), "seconds": round(seconds, 3)})
            out = work / f"get-{run}"
            started = time.monotonic()
            getter = Proc(peer_args("get", data.name, "-o", f"{out}/", "--state-dir", str(work / f"get-state-{run}"), "--tracker", address), "get")
            procs.append(getter)
            stamp, _ = getter.wait_for(r"\S -> \S.* in [0-9.]+ s", 900)
            getter.stop()
            assert (out / data.name).stat().st_size == size
            results["get"].append({"mib_per_s": rate(size, stamp - started), "seconds": round(stamp - started, 3)})
            shutil.rmtree(out)
            os.sync()
            nbytes, seconds = curl(fetch_url)
            assert nbytes == size, nbytes
            results["on_demand"].append({"mib_per_s": rate(size, seconds), "seconds": round(seconds, 3)})
            gateway.wait_for(r"fetched payload\.bin for the gateway", 120)
            (work / "fetched" / data.name).unlink()  # the next run fetches again (the peer then holds no file there: it fetches anew)
            for line in (results["held"][-1], results["get"][-1], results["on_demand"][-1]):
                print(f"  {json.dumps(line)}", file=sys.stderr)
    finally:
        for proc in reversed(procs):
            proc.stop()
        if options.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    for key in ("held", "get", "on_demand"):
        rates = [r["mib_per_s"] for r in results[key]]
        results[f"{key}_mib_per_s"] = f"{min(rates)}-{max(rates)}"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
