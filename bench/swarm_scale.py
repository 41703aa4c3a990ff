"""Swarm scaling benchmark: chunkswarm and libtorrent, one seeder to 1, 2, 4, 8 and 16 downloaders, side by side.

    python bench/swarm_scale.py [--size-mib 256] [--downloaders 1,2,4,8,16] [--runs 1]

Every peer is a process of its own on 127.0.0.1; downloaders keep serving
until the last one is done. For each swarm size the two systems run in turn,
alternating which goes first from one run to the next: chunkswarm (its
tracker, ``seed``, ``get --seed``) and libtorrent (Debian's
``python3-libtorrent`` run by ``/usr/bin/python3``, this script in its
``--lt-peer`` role, with ``opentracker``; TCP only, DHT/LSD/UPnP off, as
``../shared/anchors/21_libtorrent_swarm.py`` measures it).

Printed per system and swarm size (medians over ``--runs``):

* ``seconds``: from the downloaders' spawn until the last has its verified file (libtorrent: flushed);
* ``cpu_s_per_gib``: user + system CPU of the seeder and the downloaders when the last is done, per GiB
  delivered (file size x downloaders); the trackers are left out (opentracker's is nil, ours is in
  ``tracker_cpu_s``);
* ``sent_over_needed``: payload bytes every peer uploaded over the bytes the downloaders needed;
* ``shares``: each downloader's part of all uploaded bytes (the seeder has the rest), and ``share_spread``:
  the largest and the smallest share over the downloaders' mean share (issue 16's goal: within a factor of 3);
* ``peak_private_mib``: the largest peak private memory of a downloader (``Private_*`` of
  ``/proc/PID/smaps_rollup``, sampled every 50 ms), and ``peak_anonymous_mib`` its anonymous part
  (libtorrent maps the file it writes, and those pages count as private).

The last line is one JSON object with every figure; a table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
LT_PYTHON = "/usr/bin/python3"
GIB = 2**30


# -- measuring processes -------------------------------------------------------------
def private_bytes(pid: int) -> tuple[int, int]:
    """Private_Clean + Private_Dirty of ``pid``, and its Anonymous memory (bytes); 0 once it is gone.

    Private counts the pages of a file mapped by this process alone too (libtorrent 2 maps the file it
    downloads); Anonymous is the process's own memory (heap, buffers), whatever it maps.
    """
    try:
        lines = pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    private = sum(int(line.split()[1]) * 1024 for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))
    return private, sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("Anonymous:"))


def cpu_seconds(pid: int) -> float:
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class MemoryWatch:
    """Samples the private memory of some processes every ``period`` seconds in a thread; keeps each one's peak."""

    def __init__(self, pids: list[int], period: float = 0.05) -> None:
        self.peaks = dict.fromkeys(pids, (0, 0))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            for pid, (private, anonymous) in self.peaks.items():
                now = private_bytes(pid)
                self.peaks[pid] = max(private, now[0]), max(anonymous, now[1])

    def stop(self) -> list[tuple[int, int]]:
        self._stop.set()
        self._thread.join()
        return list(self.peaks.values())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def summarise(size: int, downloaders: int, seconds: float, cpu: float, uploads: list[int], getter_uploads: list[int],
              peaks: list[tuple[int, int]]) -> dict[str, Any]:  # fmt: skip
    total = sum(uploads)
    shares = [round(u / total, 3) if total else 0.0 for u in getter_uploads]
    mean = statistics.mean(shares) if shares else 0.0
    return {
        "seconds": round(seconds, 3),
        "cpu_s_per_gib": round(cpu / (size * downloaders / GIB), 3),
        "sent_over_needed": round(total / (size * downloaders), 3),
        "shares": shares,
        "share_spread": [round(max(shares) / mean, 2), round(min(shares) / mean, 2)] if mean else [0.0, 0.0],
        "peak_private_mib": round(max(private for private, _ in peaks) / 2**20, 1),
        "peak_anonymous_mib": round(max(anonymous for _, anonymous in peaks) / 2**20, 1),
    }


# -- chunkswarm ----------------------------------------------------------------------
def run_chunkswarm(downloaders: int, data: pathlib.Path, work: pathlib.Path, options: argparse.Namespace, root: pathlib.Path | None = None) -> dict[str, Any]:
    """One chunkswarm run, of this checkout or of the one at ``root`` (``--compare-root``)."""
    import swarm  # bench/swarm.py (imports the project: not for the --lt-peer role)

    here, cwd = swarm.ROOT, os.getcwd()
    swarm.ROOT = root or here  # Proc runs the peers with PYTHONPATH=ROOT, and `python -m` looks in the working directory first
    os.chdir(swarm.ROOT)
    try:
        return _run_chunkswarm(downloaders, data, work, options, root)
    finally:
        swarm.ROOT = here
        os.chdir(cwd)


def _run_chunkswarm(downloaders: int, data: pathlib.Path, work: pathlib.Path, options: argparse.Namespace, root: pathlib.Path | None) -> dict[str, Any]:
    from swarm import Proc, peer_args

    run_dir = work / "cs"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    os.sync()  # earlier runs' writeback is not in this one's time
    tracker = Proc(peer_args("tracker", "--port", "0", "--db", str(run_dir / "tracker.db"), "--heartbeat-interval", "5", "--peer-timeout", "30"), "tracker")
    procs = [tracker]
    try:
        address = tracker.wait_for(r"tracker listening on (\S+)", 30)[1].group(1)
        common = ["--tracker", address, "--log-level", "INFO", *options.chunkswarm_option]
        seeder = Proc(peer_args("seed", str(data), "--chunk-size", str(options.chunk_size), "--state-dir", str(work / "seed-state"), "--label", "seed", *common),
                      "seed")  # fmt: skip
        procs.append(seeder)
        seeder.wait_for(r"seeding ", 600)
        start = time.monotonic()
        getters = [Proc(peer_args("get", data.name, "-o", f"{run_dir / f'get-{i}'}/", "--seed", "--state-dir", str(run_dir / f"get-{i}-state"),
                                  "--label", f"get-{i}", *common), f"get-{i}") for i in range(1, downloaders + 1)]  # fmt: skip
        procs += getters
        memory = MemoryWatch([getter.popen.pid for getter in getters])
        finished = [getter.wait_for(r"\S -> \S.* in [0-9.]+ s", 900)[0] for getter in getters]
        cpu = sum(cpu_seconds(proc.popen.pid) for proc in procs[1:])
        tracker_cpu = cpu_seconds(tracker.popen.pid)
        peaks = memory.stop()
        for getter in getters:
            # Stopped only once it catches SIGTERM, so that it logs what it uploaded.
            getter.wait_for(r"serving on ", 60)
            assert (run_dir / getter.label / data.name).stat().st_size == data.stat().st_size
    finally:
        for proc in reversed(procs):
            proc.stop()
        if options.log_dir is not None:
            options.log_dir.mkdir(parents=True, exist_ok=True)
            for proc in procs:
                (options.log_dir / f"{root.name + '-' if root else ''}{downloaders}-{proc.label}.log").write_text("\n".join(line for _, line in proc.lines) + "\n")
    uploads = [proc.uploaded() for proc in procs[1:]]
    if any(not any("uploaded" in line for _, line in proc.lines) for proc in procs[1:]):
        raise RuntimeError("a chunkswarm peer did not log its upload count")
    result = summarise(data.stat().st_size, downloaders, max(finished) - start, cpu, uploads, uploads[1:], peaks)
    result["tracker_cpu_s"] = round(tracker_cpu, 2)
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


# -- libtorrent ----------------------------------------------------------------------
def lt_make_torrent(data: str, torrent: str, announce: str) -> None:
    """(Under /usr/bin/python3.) A torrent of ``data`` with 1 MiB pieces; prints its info-hash."""
    import libtorrent as lt  # type: ignore[import-not-found]  # Debian's, under /usr/bin/python3

    storage = lt.file_storage()
    lt.add_files(storage, data)
    maker = lt.create_torrent(storage, 2**20)
    maker.add_tracker(announce)
    maker.set_priv(True)
    lt.set_piece_hashes(maker, os.path.dirname(data))
    body = lt.bencode(maker.generate())
    pathlib.Path(torrent).write_bytes(body)
    print(str(lt.torrent_info(torrent).info_hash()))


def lt_peer(role: str, port: int, torrent: str, save: str, report: str) -> None:
    """(Under /usr/bin/python3.) Seed or download until SIGTERM; a leecher appends ``done TIME`` once its file is flushed; on SIGTERM, ``uploaded BYTES``."""
    import libtorrent as lt

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    session = lt.session({
        "listen_interfaces": f"127.0.0.1:{port}", "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True, "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })  # fmt: skip
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save
    if role == "seed":
        params.flags |= lt.torrent_flags.seed_mode  # the file is the one hashed: no check before the clock
    handle = session.add_torrent(params)
    done = False
    while not stopping.is_set():
        session.wait_for_alert(100)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.torrent_finished_alert) and role == "leech" and not done:
                done = True
                handle.flush_cache()
            elif isinstance(alert, lt.cache_flushed_alert) and done:
                with open(report, "a") as out:
                    out.write(f"done {time.time():.6f}\n")
            elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                print(role, port, "ERROR", alert.message(), flush=True)
    with open(report, "a") as out:
        out.write(f"uploaded {handle.status().total_payload_upload}\n")


def _report(path: pathlib.Path, key: str) -> str | None:
    for line in path.read_text().splitlines() if path.exists() else ():
        if line.startswith(key + " "):
            return line.split()[1]
    return None


def _scrape_complete(port: int, info_hash: str) -> int:
    import urllib.request

    quoted = "".join("%" + info_hash[i : i + 2] for i in range(0, 40, 2))
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/scrape?info_hash={quoted}", timeout=2).read()
    except OSError:
        return 0
    at = body.find(b"completei")
    return int(body[at + 9 : body.index(b"e", at + 9)]) if at >= 0 else 0


def _stop(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is None:
        popen.terminate()
    try:
        popen.wait(10)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def run_libtorrent(downloaders: int, data: pathlib.Path, work: pathlib.Path, options: argparse.Namespace) -> dict[str, Any]:
    run_dir = work / "lt"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    os.sync()
    port = free_port()
    torrent = run_dir / "data.torrent"
    made = subprocess.run([LT_PYTHON, __file__, "--lt-make-torrent", str(data), str(torrent), f"http://127.0.0.1:{port}/announce"],
                          check=True, capture_output=True, text=True)  # fmt: skip
    info_hash = made.stdout.strip()
    (run_dir / "whitelist.txt").write_text(info_hash + "\n")  # Debian builds opentracker with a whitelist
    (run_dir / "opentracker.conf").write_text(f"listen.tcp_udp 127.0.0.1:{port}\ntracker.rootdir {run_dir}\naccess.whitelist /whitelist.txt\n")
    popens: list[subprocess.Popen[bytes]] = []
    try:
        popens.append(subprocess.Popen(["opentracker", "-f", str(run_dir / "opentracker.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def spawn(role: str, index: int) -> pathlib.Path:
            save, report = run_dir / f"{role}-{index}", run_dir / f"{role}-{index}.report"
            save.mkdir()
            if role == "seed":
                os.link(data, save / data.name)
            popens.append(subprocess.Popen([LT_PYTHON, __file__, "--lt-peer", role, str(free_port()), str(torrent), str(save), str(report)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            return report

        seed_report = spawn("seed", 0)
        deadline = time.monotonic() + 60
        while _scrape_complete(port, info_hash) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the libtorrent seeder did not reach opentracker")
            time.sleep(0.2)
        start, started = time.monotonic(), time.time()
        reports = [spawn("leech", i) for i in range(1, downloaders + 1)]
        peers = popens[1:]
        memory = MemoryWatch([popen.pid for popen in peers[1:]])
        deadline = time.monotonic() + 900
        while not all(_report(report, "done") for report in reports):
            if time.monotonic() > deadline:
                raise RuntimeError("libtorrent downloaders did not finish")
            time.sleep(0.02)
        cpu = sum(cpu_seconds(popen.pid) for popen in peers)
        peaks = memory.stop()
        seconds = max(float(_report(report, "done") or 0) for report in reports) - started
        del start
        for index in range(1, downloaders + 1):
            assert (run_dir / f"leech-{index}" / data.name).stat().st_size == data.stat().st_size
    finally:
        for popen in reversed(popens):
            _stop(popen)
    uploads = [int(_report(report, "uploaded") or 0) for report in (seed_report, *reports)]
    result = summarise(data.stat().st_size, downloaders, seconds, cpu, uploads, uploads[1:], peaks)
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


# -- the comparison ------------------------------------------------------------------
def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every figure over runs (shares: of the run with the median time)."""
    middle = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    merged = {key: round(statistics.median(run[key] for run in runs), 3) for key in ("seconds", "cpu_s_per_gib", "sent_over_needed", "peak_private_mib", "peak_anonymous_mib")}
    return {**merged, "shares": middle["shares"], "share_spread": middle["share_spread"], "runs": len(runs)}


def main() -> None:
    if sys.argv[1:2] == ["--lt-peer"]:
        role, port, torrent, save, report = sys.argv[2:7]
        return lt_peer(role, int(port), torrent, save, report)
    if sys.argv[1:2] == ["--lt-make-torrent"]:
        return lt_make_torrent(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=2**20, help="chunkswarm's chunk size (libtorrent's pieces are 1 MiB)")
    parser.add_argument("--downloaders", default="1,2,4,8,16", help="swarm sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=1, help="runs of each system per swarm size (medians are printed)")
    parser.add_argument("--systems", default="chunkswarm,libtorrent")
    parser.add_argument("--chunkswarm-option", action="append", default=[], help="an option for every chunkswarm peer (repeat)")
    parser.add_argument("--compare-root", type=pathlib.Path, default=None, help="also run chunkswarm from this checkout (another commit), as chunkswarm@base")
    parser.add_argument("--log-dir", type=pathlib.Path, default=None, help="write every chunkswarm process's log to DIR/[BASE-]N-LABEL.log")
    parser.add_argument("--workdir", type=pathlib.Path, default=None)
    options = parser.parse_args()
    work = options.workdir or pathlib.Path(tempfile.mkdtemp(prefix="chunkswarm-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    from swarm import make_file

    data = work / "payload.bin"
    size = options.size_mib * 2**20
    if not data.exists() or data.stat().st_size != size:
        make_file(data, size)
    systems: dict[str, Callable[..., dict[str, Any]]] = {"chunkswarm": run_chunkswarm, "libtorrent": run_libtorrent}
    chosen = options.systems.split(",")
    if options.compare_root is not None:
        systems["chunkswarm@base"] = lambda n, d, w, o: run_chunkswarm(n, d, w, o, root=options.compare_root.resolve())
        chosen.append("chunkswarm@base")
    results: dict[str, Any] = {"size_mib": options.size_mib, "load_average_start": os.getloadavg(), "cpus": os.cpu_count()}
    try:
        for count in (int(n) for n in options.downloaders.split(",")):
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
            for run in range(options.runs):
                for name in chosen if run % 2 == 0 else reversed(chosen):
                    figures = systems[name](count, data, work, options)
                    print(f"{name} x{count} run {run + 1}: {json.dumps(figures)}", file=sys.stderr)
                    runs[name].append(figures)
            results[str(count)] = {name: median_of(figures) for name, figures in runs.items()}
    finally:
        if options.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    print("| downloaders | system | s | CPU-s/GiB | sent/needed | share max/min of mean | peak private (anonymous) MiB |", file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for count in options.downloaders.split(","):
        for name, row in results[count].items():
            print(f"| {count} | {name} | {row['seconds']} | {row['cpu_s_per_gib']} | {row['sent_over_needed']} | "
                  f"{row['share_spread'][0]} / {row['share_spread'][1]} | {row['peak_private_mib']} ({row['peak_anonymous_mib']}) |", file=sys.stderr)  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
