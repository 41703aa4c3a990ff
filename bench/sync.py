"""Folder sync benchmark: two ``chunkswarm sync`` nodes against two Syncthing instances, the same workloads, one run.

    python bench/sync.py [--big-mib 1024] [--files 10000] [--only chunkswarm|syncthing]
                         [--workloads big,small,edits] [--compare-root /work/base]

Workloads, in order, on fresh folders of each system (under /dev/shm: the
root file system of the project's machines is ext4 without a journal, where
creating many files soon after deleting many is several times slower):

* ``big_file``: one file of ``--big-mib`` MiB of random bytes appears in A;
* ``small_files``: ``--files`` files of 1-20 KB in 100 folders appear in A;
* ``deletions_and_modifications``: then 1,000 of them are deleted and 100 rewritten on A.

``--workloads`` runs some of them (``edits`` needs the small files: with
``edits`` alone, ``small`` runs first too). ``--compare-root`` runs another
checkout's chunkswarm (its own code, this script) as a third system,
``chunkswarm_base``, on the same workloads in the same run.

Each change is made atomically (written beside A, then renamed in), Syncthing
is told to scan at once (REST ``/rest/db/scan``), and the time runs from the
change until B's folder is identical to A's (every path, size and content;
the systems' own state folders aside). Syncthing is Debian's
``/usr/bin/syncthing``, two instances on 127.0.0.1 with static addresses,
global/local discovery, relays, NAT traversal and usage reports off, one
send-receive folder, file-system watching off (scans are triggered). The last
line printed is one JSON object: seconds per workload and system, CPU seconds
per process, and the machine's load averages before and after.

Environment: ``SYNC_BENCH_LOG=DEBUG`` sets the nodes' log level (their logs in
the work folder, kept with ``--keep``); ``SYNC_BENCH_PROFILE=1`` runs the
tracker and both nodes under cProfile (``tracker.prof``, ``a.prof``, ``b.prof``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chunkswarm.node_key import KEY_FILE, load_or_create_key  # noqa: E402

SYNCTHING = shutil.which("syncthing") or "/usr/bin/syncthing"
POLL = 0.02


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str]:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system time of ``pid`` and its live children (``syncthing serve`` runs its work in a child)."""
    total = 0.0
    pids = [pid]
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and (f := _stat(int(p))) and int(f[1]) == pid]
    for each in pids + children:
        fields = _stat(each)
        if fields:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def listing(root: pathlib.Path, skip: str) -> dict[str, int]:
    out = {}
    for folder, dirs, files in os.walk(root):
        if pathlib.Path(folder) == root:
            dirs[:] = [d for d in dirs if d != skip]
        dirs[:] = [d for d in dirs if not d.startswith(".syncthing.")]
        for name in files:
            if name.startswith(".syncthing.") or name == skip or ".chunkswarm-tmp-" in name:
                continue
            path = os.path.join(folder, name)
            try:
                out[os.path.relpath(path, root)] = os.stat(path).st_size
            except FileNotFoundError:  # replaced or removed while listed
                out[os.path.relpath(path, root)] = -1
    return out


def identical(a: pathlib.Path, b: pathlib.Path, skip: str) -> bool:
    left = listing(a, skip)
    if left != listing(b, skip):
        return False
    try:
        for path in left:
            with open(a / path, "rb") as x, open(b / path, "rb") as y:
                while True:
                    one, two = x.read(1 << 20), y.read(1 << 20)
                    if one != two:
                        return False
                    if not one:
                        break
    except FileNotFoundError:  # replaced while compared
        return False
    return True


def names(root: pathlib.Path, skip: str) -> set[str]:
    """The relative paths :func:`listing` would list, without a ``stat`` each (a few ms for 10,000 files)."""
    out = set()
    for folder, dirs, files in os.walk(root):
        if pathlib.Path(folder) == root:
            dirs[:] = [d for d in dirs if d != skip]
        dirs[:] = [d for d in dirs if not d.startswith(".syncthing.")]
        out.update(os.path.relpath(os.path.join(folder, name), root) for name in files
                   if not (name.startswith(".syncthing.") or name == skip or ".chunkswarm-tmp-" in name))  # fmt: skip
    return out


def wait_identical(a: pathlib.Path, b: pathlib.Path, skip: str, start: float, timeout: float) -> float:
    """Seconds from ``start`` until B is identical to A (the names first, then sizes, then every byte).

    A does not change once the change is made: it is listed once. B is polled by names alone until
    they match, then with sizes: listing both with a ``stat`` per file every 20 ms kept one of the
    machine's two cores busy for the whole measurement, away from the systems measured.
    """
    deadline = start + timeout
    want = listing(a, skip)
    want_names = set(want)
    while time.monotonic() < deadline:
        if names(b, skip) == want_names and listing(b, skip) == want:
            done = time.monotonic()
            if identical(a, b, skip):
                return done - start
        time.sleep(POLL)
    raise SystemExit(f"not identical after {timeout} s: {a} and {b}")


# -- workloads: each prepares its change outside A, then makes it (atomically) and returns when it is made ----------
def make_big(stage: pathlib.Path, mib: int) -> Callable[[pathlib.Path], None]:
    path = stage / "big.bin"
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))

    def change(a: pathlib.Path) -> None:
        os.rename(path, a / "big.bin")

    return change


def make_small(stage: pathlib.Path, count: int, rng: random.Random) -> Callable[[pathlib.Path], None]:
    tree = stage / "small"
    for i in range(count):
        folder = tree / f"dir{i % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"file{i:05d}.dat").write_bytes(rng.randbytes(rng.randint(1000, 20000)))

    def change(a: pathlib.Path) -> None:
        for folder in sorted(tree.iterdir()):
            os.rename(folder, a / folder.name)

    return change


def make_edits(stage: pathlib.Path, a: pathlib.Path, rng: random.Random) -> Callable[[pathlib.Path], None]:
    files = sorted(p.relative_to(a) for p in a.glob("dir*/*.dat"))
    doomed = files[0::10][:1000]
    edited = files[5::100][:100]
    stage.mkdir(parents=True, exist_ok=True)
    for i in range(len(edited)):
        (stage / f"edit{i}").write_bytes(rng.randbytes(rng.randint(1000, 20000)))

    def change(a: pathlib.Path) -> None:
        for path in doomed:
            os.unlink(a / path)
        for i, path in enumerate(edited):
            os.rename(stage / f"edit{i}", a / path)

    return change


# -- the systems ---------------------------------------------------------------------------------------
class Chunkswarm:
    skip = ".chunkswarm"
    name = "chunkswarm"
    #: The checkout whose code the nodes run (``--compare-root`` makes a second class with another).
    root = ROOT

    def __init__(self, work: pathlib.Path) -> None:
        self.work = work
        self.a, self.b = work / "a", work / "b"
        self.a.mkdir()
        self.b.mkdir()
        env = {**os.environ, "PYTHONPATH": str(self.root), "COLUMNS": "250"}
        self.logs = {label: open(work / f"{label}.log", "w") for label in ("tracker", "a", "b")}  # noqa: SIM115
        port = free_port()
        profile = ["-m", "cProfile", "-o", str(work / "tracker.prof")] if os.environ.get("SYNC_BENCH_PROFILE") else []
        self.procs = {"tracker": subprocess.Popen(
            [sys.executable, *profile, "-m", "chunkswarm", "tracker", "--port", str(port), "--db", str(work / "t.db"),
             "--max-files-per-publisher", "1000000", "--log-level", "WARNING"],
            stderr=self.logs["tracker"], stdout=subprocess.DEVNULL, env=env, cwd=self.root)}  # fmt: skip
        time.sleep(1.0)
        key_b = load_or_create_key(self._state("b") / KEY_FILE).public_key.hex()
        for label, extra in (("a", ["--owner", key_b]), ("b", [])):
            profile = ["-m", "cProfile", "-o", str(work / f"{label}.prof")] if os.environ.get("SYNC_BENCH_PROFILE") else []
            self.procs[label] = subprocess.Popen(
                [sys.executable, *profile, "-m", "chunkswarm", "sync", str(work / label), "--collection", "bench", "--tracker", f"127.0.0.1:{port}",
                 "--state-dir", str(self._state(label)), "--label", label, "--log-level", os.environ.get("SYNC_BENCH_LOG", "INFO"), *extra],
                stderr=self.logs[label], stdout=subprocess.DEVNULL, env=env, cwd=self.root)  # fmt: skip
            self._wait_log(label, "serving on")
            if label == "a":
                self._wait_log(label, "published version 1")  # a creates the collection (owned by a and b); then b starts
        time.sleep(1.0)

    def _state(self, label: str) -> pathlib.Path:
        path = self.work / f"state-{label}"
        path.mkdir(exist_ok=True)
        return path

    def _wait_log(self, label: str, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (self.work / f"{label}.log").read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise SystemExit(f"chunkswarm {label} did not log {text!r}")

    def changed(self) -> None:
        pass  # the nodes watch their folders

    def cpu(self) -> dict[str, float]:
        return {label: round(cpu_seconds(proc.pid), 2) for label, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


class Syncthing:
    skip = ".stfolder"
    name = "syncthing"

    def __init__(self, work: pathlib.Path) -> None:
        self.work = work
        self.a, self.b = work / "a", work / "b"
        ids, ports, guis = {}, {}, {}
        self.key = secrets.token_hex(16)
        for label in ("a", "b"):
            home = work / f"home-{label}"
            subprocess.run([SYNCTHING, "generate", f"--home={home}", "--no-default-folder"], check=True, capture_output=True)
            ids[label] = subprocess.run([SYNCTHING, "serve", f"--home={home}", "--device-id"], check=True, capture_output=True,
                                        text=True).stdout.strip()  # fmt: skip
            ports[label], guis[label] = free_port(), free_port()
            (work / label / ".stfolder").mkdir(parents=True)
        for label in ("a", "b"):
            devices = "".join(f'<device id="{ids[x]}" name="{x}"><address>tcp://127.0.0.1:{ports[x]}</address></device>' for x in ("a", "b"))
            folder_devices = "".join(f'<device id="{ids[x]}"></device>' for x in ("a", "b"))
            config = f"""<configuration version="36">
<folder id="bench" label="bench" path="{work / label}" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="false">{folder_devices}</folder>
{devices}
<gui enabled="true" tls="false"><address>127.0.0.1:{guis[label]}</address><apikey>{self.key}</apikey></gui>
<options><listenAddress>tcp://127.0.0.1:{ports[label]}</listenAddress><globalAnnounceEnabled>false</globalAnnounceEnabled>
<localAnnounceEnabled>false</localAnnounceEnabled><relaysEnabled>false</relaysEnabled><natEnabled>false</natEnabled>
<urAccepted>-1</urAccepted><autoUpgradeIntervalH>0</autoUpgradeIntervalH><crashReportingEnabled>false</crashReportingEnabled>
<startBrowser>false</startBrowser></options>
</configuration>"""
            (work / f"home-{label}" / "config.xml").write_text(config)
        self.guis = guis
        env = {**os.environ, "STNODEFAULTFOLDER": "1", "STNOUPGRADE": "1"}
        self.logs = {label: open(work / f"{label}.log", "w") for label in ("a", "b")}  # noqa: SIM115
        self.procs = {label: subprocess.Popen([SYNCTHING, "serve", f"--home={work / f'home-{label}'}", "--no-browser", "--no-restart"],
                                              stdout=self.logs[label], stderr=subprocess.STDOUT, env=env) for label in ("a", "b")}  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both up and connected to each other
            try:
                connections = self._get("a", "/rest/system/connections")["connections"]
                if any(c.get("connected") for c in connections.values()):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("the Syncthing instances did not connect")

    def _get(self, label: str, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.guis[label]}{path}", headers={"X-API-Key": self.key})
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.loads(reply.read() or b"null")

    def changed(self) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.guis['a']}/rest/db/scan?folder=bench", method="POST",
                                         headers={"X-API-Key": self.key})  # fmt: skip
        urllib.request.urlopen(request, timeout=10).read()

    def cpu(self) -> dict[str, float]:
        return {label: round(cpu_seconds(proc.pid), 2) for label, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


WORKLOADS = {"big": "big_file", "small": "small_files", "edits": "deletions_and_modifications"}


def run_system(kind: type[Chunkswarm] | type[Syncthing], base: pathlib.Path, big_mib: int, files: int, seed: int,
               workloads: set[str], keep: bool = False) -> dict[str, Any]:  # fmt: skip
    work = base / kind.name
    work.mkdir()
    stage = base / f"stage-{kind.name}"
    stage.mkdir()
    rng = random.Random(seed)
    system = kind(work)
    results: dict[str, Any] = {}
    try:
        steps: list[tuple[str, Callable[[], Callable[[pathlib.Path], None]], float]] = [
            ("big_file", lambda: make_big(stage, big_mib), 300),
            ("small_files", lambda: make_small(stage, files, rng), 600),
            ("deletions_and_modifications", lambda: make_edits(stage / "edits", system.a, rng), 300),
        ]
        for name, prepare, timeout in steps:
            if name not in workloads:
                continue
            change = prepare()
            identical(system.a, system.a, system.skip)  # A's files in the page cache before the clock starts
            before = system.cpu()
            start = time.monotonic()
            change(system.a)
            system.changed()
            seconds = wait_identical(system.a, system.b, system.skip, start, timeout)
            after = system.cpu()
            results[name] = {"seconds": round(seconds, 3), "cpu_seconds": {k: round(after[k] - before.get(k, 0), 2) for k in after}}
            print(f"{time.strftime('%H:%M:%S')} {kind.name} {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
    finally:
        system.stop()
        if not keep:
            # Each system starts with the same memory free: the files of one left in /dev/shm made the next pay about
            # twice the CPU writing its copy (B's CPU for the same code 3.0 s first, 6.2 s second), Syncthing (last) most.
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(stage, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--only", choices=["chunkswarm", "syncthing"])
    parser.add_argument("--workloads", default="big,small,edits", help="Which workloads, comma-separated: big, small, edits.")
    parser.add_argument("--compare-root", type=pathlib.Path, help="Also run the chunkswarm of this checkout (its own code).")
    parser.add_argument("--keep", action="store_true", help="Keep the folders and logs (for a look after a failure).")
    parser.add_argument("--base", type=pathlib.Path, default=pathlib.Path("/dev/shm") if os.path.isdir("/dev/shm") else None)
    args = parser.parse_args()
    chosen = {w.strip() for w in args.workloads.split(",") if w.strip()}
    if not chosen or chosen - set(WORKLOADS):
        parser.error(f"--workloads: choose among {', '.join(WORKLOADS)}")
    if "edits" in chosen:
        chosen.add("small")  # the edits are made to the small files
    workloads = {WORKLOADS[w] for w in chosen}
    kinds: list[type[Chunkswarm] | type[Syncthing]] = [Chunkswarm]
    if args.compare_root is not None:
        kinds.append(type("ChunkswarmBase", (Chunkswarm,), {"name": "chunkswarm_base", "root": args.compare_root.resolve()}))
    kinds.append(Syncthing)
    load_before = os.getloadavg()
    out: dict[str, Any] = {"big_mib": args.big_mib, "files": args.files, "load_before": [round(x, 2) for x in load_before]}
    base = pathlib.Path(tempfile.mkdtemp(prefix="syncbench-", dir=args.base))
    try:
        for kind in kinds:
            if args.only in (None, kind.name.partition("_")[0]):
                out[kind.name] = run_system(kind, base, args.big_mib, args.files, seed=1, workloads=workloads, keep=args.keep)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
