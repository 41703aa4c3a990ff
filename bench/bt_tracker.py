"""BitTorrent HTTP announce rate: our tracker against opentracker, one after the other, under the same wrk load.

    python bench/bt_tracker.py [--seconds 10] [--connections 64] [--threads 2] [--torrents 1000] [--profile PATH]

``wrk`` (Debian's, on PATH) runs ``bench/bt_announce.lua``: announces of a
random info-hash among ``--torrents`` (SHA-1 of ``bench-<i>``), a random peer
id and port, half seeders, ``numwant=50``, compact. First against
``python -m chunkswarm tracker --bt-http`` (its per-address caps lifted: every
simulated peer comes from 127.0.0.1), then against Debian's ``opentracker``
(run as root in a temporary chroot directory, the info-hashes whitelisted, as
Debian builds it in whitelist mode), each fresh, on free ports of 127.0.0.1.
opentracker closes the connection after every answer; ours keeps it open
(HTTP/1.1 keep-alive), as wrk asks.

The last line printed is one JSON object: per tracker the requests/s, the
latency percentiles in ms, answers that were not a 200 with peers, and (ours)
the tracker's CPU time per answered request. ``--profile PATH`` adds a third
run of ours under cProfile (slower: its rate is not comparable) and writes the
profile to PATH, printing the top functions by own time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bt_announce.lua"


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (opentracker listens on both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the tracker exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout}s")


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, hashes: pathlib.Path, args: argparse.Namespace) -> dict[str, Any]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", str(SCRIPT), url, "--", str(hashes)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60, check=True).stdout
    result: dict[str, Any] = {"requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    for percent in ("50", "90", "99"):
        match = re.search(rf"^\s+{percent}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{percent}_ms"] = round(to_ms(match.group(1)), 3) if match else None
    result["failed_answers"] = int(re.search(r"FAILED_ANSWERS (\d+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = errors.group(1) if errors else ""
    return result


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench_ours(work: pathlib.Path, hashes: pathlib.Path, args: argparse.Namespace, profile: str | None = None) -> dict[str, Any]:
    port = free_port()
    python = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    command = [
        *python, "-m", "chunkswarm", "tracker", "--port", "0", "--db", str(work / "tracker.db"), "--log-level", "warning",
        "--bt-http", f"127.0.0.1:{port}", "--bt-max-peers-per-ip", "0", "--bt-max-peers-per-ip-per-torrent", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        before = cpu_seconds(proc.pid)
        result = run_wrk(f"http://127.0.0.1:{port}/announce", hashes, args)
        result["tracker_cpu_us_per_request"] = round((cpu_seconds(proc.pid) - before) * 1e6 / max(1, result["requests"]), 1)
    finally:
        stop(proc)
    return result


def bench_opentracker(work: pathlib.Path, hashes: pathlib.Path, args: argparse.Namespace) -> dict[str, Any]:
    binary = shutil.which("opentracker") or sys.exit("opentracker is not installed (Debian package opentracker)")
    root = work / "ot"
    root.mkdir()
    root.chmod(0o755)
    shutil.copy(hashes, root / "whitelist.txt")
    (root / "whitelist.txt").chmod(0o644)
    port = free_port()
    config = root / "opentracker.conf"
    config.write_text(f"listen.tcp_udp 127.0.0.1:{port}\ntracker.rootdir {root}\naccess.whitelist /whitelist.txt\n")
    proc = subprocess.Popen([binary, "-f", str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        time.sleep(0.5)  # the whitelist is read by a thread of its own after start
        before = cpu_seconds(proc.pid)
        result = run_wrk(f"http://127.0.0.1:{port}/announce", hashes, args)
        result["tracker_cpu_us_per_request"] = round((cpu_seconds(proc.pid) - before) * 1e6 / max(1, result["requests"]), 1)
    finally:
        proc.terminate()
        proc.wait(10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torrents", type=int, default=1000)
    parser.add_argument("--profile", default=None, help="also profile ours under cProfile and write the profile here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian package wrk)")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bt-bench-") as tmp:
        work = pathlib.Path(tmp)
        hashes = work / "hashes.txt"
        hashes.write_text("".join(hashlib.sha1(b"bench-%d" % i).hexdigest() + "\n" for i in range(args.torrents)))
        ours = bench_ours(work, hashes, args)
        print("chunkswarm:", ours, flush=True)
        theirs = bench_opentracker(work, hashes, args)
        print("opentracker:", theirs, flush=True)
        report: dict[str, Any] = {
            "wrk": f"-t{args.threads} -c{args.connections} -d{args.seconds}s, {args.torrents} torrents",
            "load_average_at_start": round(load, 2),
            "chunkswarm": ours,
            "opentracker": theirs,
            "ratio": round(ours["requests_per_s"] / theirs["requests_per_s"], 3),
        }
        if args.profile:
            (work / "tracker.db").unlink(missing_ok=True)
            report["chunkswarm_profiled"] = bench_ours(work, hashes, args, profile=args.profile)
            stats = pstats.Stats(args.profile)
            stats.sort_stats("tottime").print_stats(25)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
