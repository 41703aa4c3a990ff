"""Start-up benchmark: the CPU a ``chunkswarm`` process spends before and around a tiny transfer.

    python bench/startup.py [--runs 5] [--compare-root /path/to/other/checkout]

Every swarm member is a process of its own, so what a process spends to start
is paid once per downloader (issue 16: libtorrent's start-up is 0.04 CPU-s).
Measured per checkout, each figure the median user + system CPU-s of the child
(``os.wait4``'s rusage) over ``--runs``:

* ``python``: ``python -c pass`` (the interpreter alone);
* ``import_trio``: ``python -c "import trio"``, the floor for any process of ours (every command runs on trio);
* ``get_help`` / ``seed_help``: ``python -m chunkswarm get --help`` (parsing only);
* ``get_tiny``: a real ``chunkswarm get`` of a 4 KiB file from a seeder of this checkout (connect,
  register, download, verify, put in place, exit);
* ``seed_tiny``: ``chunkswarm seed`` of a 4 KiB file until it logs "seeding", then SIGTERM.

With ``--compare-root`` the other checkout runs the same, alternating, and its
figures are under ``base``. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent.parent
#: Compiled modules go here, for every checkout measured: as an installed package has its .pyc files,
#: whatever PYTHONDONTWRITEBYTECODE the shell has (with it, each process would compile every module it imports).
PYCACHE = pathlib.Path(tempfile.gettempdir()) / "chunkswarm-bench-pycache"


def _env(root: pathlib.Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200", "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def rusage_cpu(args: list[str], root: pathlib.Path, stop_on: str | None = None, timeout: float = 60.0) -> float:
    """Run ``args`` in ``root``; its user + system CPU-s. With ``stop_on``, SIGTERM it once stderr shows that pattern."""
    popen = subprocess.Popen(args, cwd=root, env=_env(root), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert popen.stderr is not None
    lines: list[str] = []
    if stop_on is not None:
        timer = threading.Timer(timeout, popen.kill)
        timer.start()
        for line in popen.stderr:
            lines.append(line)
            if re.search(stop_on, line):
                popen.send_signal(signal.SIGTERM)
                break
        timer.cancel()
    lines += popen.stderr.read().splitlines()
    _, status, usage = os.wait4(popen.pid, 0)
    popen.returncode = os.waitstatus_to_exitcode(status)
    if stop_on is None and popen.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {popen.returncode}:\n" + "".join(lines[-20:]))
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """A long-running chunkswarm process of this checkout (the tracker, the seeder) that logs to stderr."""

    def __init__(self, args: list[str], ready: str) -> None:
        self.popen = subprocess.Popen([sys.executable, "-m", "chunkswarm", *args], cwd=HERE, env=_env(HERE), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert self.popen.stderr is not None
        deadline = time.monotonic() + 60
        for line in self.popen.stderr:
            if re.search(ready, line):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {ready!r}")
        else:
            raise RuntimeError(f"{args[0]} exited before {ready!r}")
        threading.Thread(target=self.popen.stderr.read, daemon=True).start()  # keep the pipe drained

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--compare-root", type=pathlib.Path, default=None, help="also measure the checkout at this path, as base")
    options = parser.parse_args()
    roots = {"head": HERE}
    if options.compare_root is not None:
        roots["base"] = options.compare_root.resolve()
    work = pathlib.Path(tempfile.mkdtemp(prefix="chunkswarm-startup-"))
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in roots}
    port = free_port()
    tracker = Service(["tracker", "--port", str(port), "--db", str(work / "tracker.db"), "--no-mdns"], r"tracker listening on")
    address = f"127.0.0.1:{port}"
    try:
        data = work / "tiny.bin"
        data.write_bytes(os.urandom(4096))
        seeder = Service(["seed", str(data), "--tracker", address, "--state-dir", str(work / "seed-state"), "--no-watch"], r"seeding ")
        try:
            for run in range(-1, options.runs):  # run -1 compiles every module once, and is not counted
                order = list(roots.items()) if run % 2 == 0 else list(reversed(roots.items()))
                for name, root in order:
                    python = [sys.executable]
                    out = work / f"{name}-{run}"
                    cases = {
                        "python": [*python, "-c", "pass"],
                        "import_trio": [*python, "-c", "import trio"],
                        "get_help": [*python, "-m", "chunkswarm", "get", "--help"],
                        "seed_help": [*python, "-m", "chunkswarm", "seed", "--help"],
                        "get_tiny": [*python, "-m", "chunkswarm", "get", data.name, "-o", f"{out}/", "--tracker", address, "--state-dir", str(out / "state")],
                    }
                    for case, args in cases.items():
                        cpu = rusage_cpu(args, root)
                        if run >= 0:
                            figures[name].setdefault(case, []).append(cpu)
                    assert (out / data.name).read_bytes() == data.read_bytes()
                    seed_args = [*python, "-m", "chunkswarm", "seed", str(data), "--tracker", address, "--state-dir", str(out / "seed-state"),
                                 "--no-watch", "--label", f"s{run}"]  # fmt: skip
                    cpu = rusage_cpu(seed_args, root, stop_on=r"seeding ")
                    if run >= 0:
                        figures[name].setdefault("seed_tiny", []).append(cpu)
                    shutil.rmtree(out, ignore_errors=True)
        finally:
            seeder.stop()
    finally:
        tracker.stop()
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {name: {case: round(statistics.median(values), 3) for case, values in cases.items()} for name, cases in figures.items()}
    result["runs"] = options.runs
    result["loadavg"] = os.getloadavg()
    for name, cases in result.items():
        if isinstance(cases, dict):
            print(f"{name:5} " + "  ".join(f"{case} {value:.3f}" for case, value in cases.items()), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
