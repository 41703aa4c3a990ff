"""Tracker load benchmark: ``python -m chunkswarm tracker`` in one process, N simulated peers in this one.

    python bench/tracker.py [--peers 1000] [--files 100] [--chunks 1000] [--seconds 10] [--rate 20000] [--depth 1]
                            [--who-has-share 0.5] [--profile PATH] [--trace PATH] [--trackers N [--state redis://HOST:PORT/N]]

``--trackers N`` runs N tracker processes sharing their state in Redis
(``--state``; without it the benchmark starts its own ``redis-server`` on a free
port, without persistence), the simulated peers spread over them in turn; the
figures are totals over the N processes (``tracker_rss_mb`` the sum, beside
each one's). ``--peers 10000``: the load generator and each tracker keep one
descriptor per connection, so both raise their open-file limit (soft, up to
the hard limit) to peers + 512; the tracker is started with
``--max-connections`` max(8192, peers + 256), and with an idle timeout as long as
its peer timeout (20 heartbeats), since with 10,000 peers making the set-up's
million announcements takes the load generator longer than the default 120 s,
during which the registered connections are idle.

Set-up: every peer connects, says HELLO and REGISTERs; ``--files`` of them
publish a manifest of ``--chunks`` chunks; then every peer announces its
holdings of every file (half of them complete copies, half a random part), so
the tracker holds peers x files replicas of chunks bits each.

Then two timed phases over the same connections, each request a 50/50 mix of
ANNOUNCE (one newly verified chunk of a random file) and WHO_HAS (a random
file, 50 holders), plus a HEARTBEAT from each peer every ``--heartbeat`` s:

* ``saturated``: closed loop, every peer keeps ``--depth`` requests in flight:
  the most the tracker answers. Latency there is mostly queueing
  (Little's law: peers x depth / throughput).
* ``paced``: open loop at ``--rate`` ANNOUNCE and WHO_HAS requests/s in
  total (heartbeats come on top), each peer sending at its share of the rate
  at random phase; latency counts from the *scheduled* send time, so a
  stalled tracker cannot hide its backlog.

The simulated peers use bare non-blocking sockets and epoll (a few
microseconds per request), so the load generator takes as little as possible
of the two cores it shares with the tracker. Replies are counted and checked by
their frame header only.

The last line printed is one JSON object; every key carries its unit.
``announce_per_s``, ``who_has_per_s``, ``p50_ms``, ``p99_ms`` are the paced
phase's, ``saturated_*`` the closed loop's; ``tracker_cpu_us_per_request`` (CPU
time of the tracker process per answered request, saturated phase) is the
figure least disturbed by other work on a shared machine, and
``load_average_at_start`` says how shared it was. ``tracker_rss_mb`` is the
tracker's resident memory once every replica is announced, or at the end if
higher; ``tracker_rss_per_peer_kb`` is that less the tracker's memory before the
first connection, per peer, in KB of 1000 bytes (issue 16's goal: at most 20 KB
per idle peer with 100 files each, the default).

``--trace PATH`` writes every paced request as a CSV line (scheduled send time
in s from the phase start, latency in ms, kind), to tell a tail of uniform
queueing from periodic stalls of the tracker's event loop.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import heapq
import json
import os
import pathlib
import random
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from common.codec import encode_message  # noqa: E402
from common.framing import HEADER, MAGIC, PROTOCOL_VERSION, Opcode  # noqa: E402
from common.manifest import Manifest  # noqa: E402
from common.messages import Heartbeat, Hello, Publish, Register, Stats  # noqa: E402

ANNOUNCE, WHO_HAS, HEARTBEAT, SETUP = 0, 1, 2, 3
KIND_NAMES = {ANNOUNCE: "announce", WHO_HAS: "who_has", HEARTBEAT: "heartbeat", SETUP: "setup"}
EXPECTED = {ANNOUNCE: Opcode.OK, WHO_HAS: Opcode.HOLDERS, HEARTBEAT: Opcode.OK}


def frame(opcode: Opcode, fields: list[Any]) -> bytes:
    payload = msgpack.packb(fields, use_bin_type=True)
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, opcode, len(payload)) + payload


# ---------------------------------------------------------------------------
# The tracker process
# ---------------------------------------------------------------------------
def tracker_caps(peers: int) -> dict[str, int]:
    """The tracker's caps this run needs: every simulated peer comes from 127.0.0.1, one connection and one peer id each.

    The per-address defaults (64 peer ids, 128 connections) would refuse all but
    the first few, so the benchmark raises them explicitly, and says so.
    """
    connections = max(8192, peers + 256)
    return {"max_connections": connections, "max_connections_per_ip": connections, "max_peers_per_ip": max(1, peers)}


class TrackerProcess:
    def __init__(self, db: str, heartbeat: float, caps: dict[str, int], profile: str | None = None, state: str | None = None) -> None:
        options = [item for name, value in caps.items() for item in ("--" + name.replace("_", "-"), str(value))]
        if state is not None:
            options += ["--state", state]
        args = [
            sys.executable, *(["-m", "cProfile", "-o", profile] if profile else []), "-m", "chunkswarm", "tracker", "--port", "0", "--db", db, "--heartbeat-interval", str(heartbeat),
            "--peer-timeout", str(heartbeat * 20), "--idle-timeout", str(heartbeat * 20), *options, "--log-level", "INFO",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"}
        self.popen = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.port_found = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self.port_found.wait(30):
            raise SystemExit("the tracker did not start:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line.rstrip())
            found = re.search(r"tracker listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                self.port_found.set()
        self.port_found.set()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.popen.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.popen.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(30)


# ---------------------------------------------------------------------------
# Simulated peers
# ---------------------------------------------------------------------------
class SimPeer:
    __slots__ = ("index", "sock", "fd", "inbuf", "outbuf", "inflight", "writing", "next_heartbeat", "next_send")

    def __init__(self, index: int, sock: socket.socket) -> None:
        self.index = index
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.inflight: collections.deque[tuple[int, float]] = collections.deque()
        self.writing = False
        self.next_heartbeat = 0.0
        self.next_send = 0.0


class LoadGenerator:
    def __init__(self, ports: list[int], args: argparse.Namespace, tracker_cpu: Callable[[], float]) -> None:
        self.args = args
        self.tracker_cpu = tracker_cpu
        self.cpu_at_end = (0.0, 0.0)  # (tracker, load generator) CPU seconds when the last phase ended
        self.rng = random.Random(args.seed)
        self.epoll = select.epoll()
        self.peers: dict[int, SimPeer] = {}
        self.manifests: list[Manifest] = []
        self.who_has_frames: list[bytes] = []
        self.heartbeat_frame = encode_message(Heartbeat())
        self.latencies: dict[int, list[float]] = {ANNOUNCE: [], WHO_HAS: [], HEARTBEAT: []}
        #: (scheduled send time, latency, kind) of every recorded request, with ``--trace``.
        self.trace: list[tuple[float, float, int]] | None = [] if args.trace else None
        self.phase_start = 0.0
        self.replies_bytes = 0
        self.errors = 0
        self.pending = 0
        for i in range(args.peers):
            sock = socket.create_connection(("127.0.0.1", ports[i % len(ports)]))  # several trackers: in turn
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            peer = SimPeer(i, sock)
            self.peers[peer.fd] = peer
            self.epoll.register(peer.fd, select.EPOLLIN)

    # -- plumbing --------------------------------------------------------------
    def send(self, peer: SimPeer, data: bytes, kind: int, when: float) -> None:
        peer.inflight.append((kind, when))
        self.pending += 1
        peer.outbuf += data

    def flush(self, peer: SimPeer) -> None:
        if peer.outbuf:
            try:
                sent = peer.sock.send(peer.outbuf)
            except BlockingIOError:
                sent = 0
            del peer.outbuf[:sent]
        want_write = bool(peer.outbuf)
        if want_write != peer.writing:
            peer.writing = want_write
            self.epoll.modify(peer.fd, select.EPOLLIN | (select.EPOLLOUT if want_write else 0))

    def receive(self, peer: SimPeer, now: float, record: bool) -> int:
        try:
            data = peer.sock.recv(1 << 20)
        except BlockingIOError:
            return 0
        if not data:
            raise SystemExit(f"the tracker closed the connection of peer {peer.index}")
        buffer = peer.inbuf
        buffer += data
        self.replies_bytes += len(data)
        offset = 0
        done = 0
        size = len(buffer)
        while size - offset >= 8:
            _, _, opcode, length = HEADER.unpack_from(buffer, offset)
            end = offset + 8 + length
            if end > size:
                break
            kind, sent_at = peer.inflight.popleft()
            if opcode == Opcode.ERROR or (kind in EXPECTED and opcode != EXPECTED[kind]):
                self.errors += 1
                if self.errors <= 5:
                    print(f"unexpected reply {Opcode(opcode).name} to {KIND_NAMES[kind]}: {bytes(buffer[offset:end])[:200]!r}", file=sys.stderr)
            elif record and kind != SETUP:
                self.latencies[kind].append(now - sent_at)
                if self.trace is not None:
                    self.trace.append((sent_at, now - sent_at, kind))
            offset = end
            done += 1
        if offset:
            del buffer[:offset]
        self.pending -= done
        return done

    def run_until_idle(self, timeout: float = 120.0) -> None:
        """Flush everything queued and read replies until none are outstanding (the set-up phases).

        Fails once no reply has come for ``timeout`` seconds: 10,000 peers' million
        announcements take minutes on a busy machine, but never stall that long.
        """
        for peer in self.peers.values():
            self.flush(peer)
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.pending} replies still missing, none for {timeout}s")
            for fd, events in self.epoll.poll(1.0):
                peer = self.peers[fd]
                if events & select.EPOLLOUT:
                    self.flush(peer)
                if events & select.EPOLLIN and self.receive(peer, 0.0, record=False):
                    deadline = time.monotonic() + timeout

    # -- set-up ----------------------------------------------------------------
    def setup(self) -> None:
        args = self.args
        for f in range(args.files):
            hashes = [hashlib.sha256(b"%d/%d" % (f, c)).digest() for c in range(args.chunks)]
            manifest = Manifest.from_hashes(f"bench-file-{f:03d}.bin", args.chunks * 1024, 1024, hashes)
            self.manifests.append(manifest)
            self.who_has_frames.append(frame(Opcode.WHO_HAS, [manifest.file_id, args.holders]))
        peers = list(self.peers.values())
        for peer in peers:
            peer_id = hashlib.sha256(b"peer %d" % peer.index).digest()[:20]
            self.send(peer, encode_message(Hello(peer_id, 10000 + peer.index)), SETUP, 0.0)
            self.send(peer, encode_message(Register(10000 + peer.index)), SETUP, 0.0)
            if peer.index < args.files:
                self.send(peer, encode_message(Publish(self.manifests[peer.index])), SETUP, 0.0)
        self.run_until_idle()
        if self.args.trackers > 1:
            time.sleep(2.0)  # published at one tracker each: let every file reach every tracker before it is announced there
        for peer in peers:
            for manifest in self.manifests:
                if (peer.index + manifest.file_id[0]) % 2 == 0:
                    ranges = [[0, args.chunks]]
                else:  # a part: a few random runs
                    cuts = sorted(self.rng.sample(range(args.chunks + 1), 8))
                    ranges = [[cuts[i], cuts[i + 1]] for i in range(0, 8, 2) if cuts[i] < cuts[i + 1]]
                self.send(peer, frame(Opcode.ANNOUNCE, [manifest.file_id, ranges]), SETUP, 0.0)
        self.run_until_idle()
        if self.errors:
            raise SystemExit(f"{self.errors} errors during set-up")

    # -- timed phases ------------------------------------------------------------
    def on_end(self) -> None:
        self.cpu_at_end = (self.tracker_cpu(), _own_cpu())

    def next_request(self, peer: SimPeer, when: float, *, heartbeat_on_top: bool = False) -> None:
        """Send ``peer``'s next request: a HEARTBEAT when one is due, instead of or before the next ANNOUNCE or WHO_HAS."""
        if when >= peer.next_heartbeat:
            peer.next_heartbeat = when + self.args.heartbeat
            self.send(peer, self.heartbeat_frame, HEARTBEAT, when)
            if not heartbeat_on_top:  # the closed loop: one request in flight per slot
                return
        f = self.rng.randrange(len(self.manifests))
        if self.rng.random() >= self.args.who_has_share:
            chunk = self.rng.randrange(self.args.chunks)
            self.send(peer, frame(Opcode.ANNOUNCE, [self.manifests[f].file_id, [[chunk, chunk + 1]]]), ANNOUNCE, when)
        else:
            self.send(peer, self.who_has_frames[f], WHO_HAS, when)

    def _reset(self, start: float) -> None:
        for values in self.latencies.values():
            values.clear()
        if self.trace is not None:
            self.trace.clear()
        self.phase_start = start
        for peer in self.peers.values():
            peer.next_heartbeat = start + self.rng.uniform(0, self.args.heartbeat)

    def saturated(self, seconds: float) -> float:
        """Closed loop; returns the measured seconds (``on_end`` runs before the backlog is drained)."""
        start = time.perf_counter()
        self._reset(start)
        for peer in self.peers.values():
            for _ in range(self.args.depth):
                self.next_request(peer, start)
            self.flush(peer)
        end = start + seconds
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            for fd, events in self.epoll.poll(0.05):
                peer = self.peers[fd]
                if events & select.EPOLLIN:
                    now = time.perf_counter()
                    for _ in range(self.receive(peer, now, record=True)):
                        self.next_request(peer, now)
                self.flush(peer)
        elapsed = time.perf_counter() - start
        self.on_end()
        self.run_until_idle()  # let the last replies in, unrecorded
        return elapsed

    def paced(self, seconds: float, rate: float) -> float:
        """Open loop at ``rate`` requests/s in total; returns the measured seconds."""
        start = time.perf_counter()
        self._reset(start)
        interval = len(self.peers) / rate
        schedule = [(start + self.rng.uniform(0, interval), peer.fd) for peer in self.peers.values()]
        heapq.heapify(schedule)
        end = start + seconds
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            touched = []
            while schedule and schedule[0][0] <= now:
                when, fd = heapq.heappop(schedule)
                peer = self.peers[fd]
                self.next_request(peer, when, heartbeat_on_top=True)  # latency from the scheduled time
                touched.append(peer)
                heapq.heappush(schedule, (when + interval, fd))
            for peer in touched:
                self.flush(peer)
            timeout = max(0.0, min(schedule[0][0] - time.perf_counter(), 0.05))
            for fd, events in self.epoll.poll(timeout):
                peer = self.peers[fd]
                if events & select.EPOLLIN:
                    self.receive(peer, time.perf_counter(), record=True)
                if events & select.EPOLLOUT:
                    self.flush(peer)
        elapsed = time.perf_counter() - start
        self.on_end()
        self.run_until_idle()
        return elapsed

    def figures(self, elapsed: float, prefix: str) -> dict[str, float]:
        everything = sorted(self.latencies[ANNOUNCE] + self.latencies[WHO_HAS] + self.latencies[HEARTBEAT])

        def percentile(values: list[float], p: float) -> float:
            return round(values[min(len(values) - 1, int(p / 100 * len(values)))] * 1000, 2) if values else 0.0

        announces, who_has = len(self.latencies[ANNOUNCE]), len(self.latencies[WHO_HAS])
        return {
            f"{prefix}announce_per_s": round(announces / elapsed),
            f"{prefix}who_has_per_s": round(who_has / elapsed),
            f"{prefix}announce_and_who_has_per_s": round((announces + who_has) / elapsed),
            f"{prefix}requests_per_s": round(len(everything) / elapsed),
            f"{prefix}p50_ms": percentile(everything, 50),
            f"{prefix}p99_ms": percentile(everything, 99),
            f"{prefix}max_ms": percentile(everything, 100),
        }

    def write_trace(self, path: str) -> None:
        assert self.trace is not None
        with open(path, "w") as out:
            out.write("sent_s,latency_ms,kind\n")
            for sent_at, latency, kind in sorted(self.trace):
                out.write(f"{sent_at - self.phase_start:.6f},{latency * 1000:.3f},{KIND_NAMES[kind]}\n")

    def tracker_stats(self) -> dict[str, Any]:
        peer = next(iter(self.peers.values()))
        self.send(peer, encode_message(Stats()), SETUP, 0.0)
        self.flush(peer)
        peer.sock.setblocking(True)
        while peer.inflight:
            data = peer.sock.recv(1 << 16)
            peer.inbuf += data
            if len(peer.inbuf) >= 8:
                _, _, _, length = HEADER.unpack_from(peer.inbuf)
                if len(peer.inbuf) >= 8 + length:
                    fields = msgpack.unpackb(bytes(peer.inbuf[8 : 8 + length]), raw=False)
                    peer.inflight.popleft()
                    return dict((k, v) for k, v in fields[0])
        return {}


class _Trackers:
    """The tracker processes as one: CPU and resident memory summed."""

    def __init__(self, trackers: list[TrackerProcess]) -> None:
        self.trackers = trackers

    def cpu_seconds(self) -> float:
        return sum(t.cpu_seconds() for t in self.trackers)

    def rss_mb(self) -> float:
        return sum(t.rss_mb() for t in self.trackers)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the simulated load (also ``bench/dashboard.py``'s)."""
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--holders", type=int, default=50, help="max_peers asked in WHO_HAS")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase")
    parser.add_argument("--rate", type=float, default=20000.0, help="ANNOUNCE and WHO_HAS requests/s offered in the paced phase")
    parser.add_argument("--depth", type=int, default=1, help="requests in flight per peer in the saturated phase")
    parser.add_argument("--who-has-share", type=float, default=0.5, help="fraction of WHO_HAS among the timed requests")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="seconds between a peer's heartbeats")
    parser.add_argument("--seed", type=int, default=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_load_arguments(parser)
    parser.add_argument("--profile", metavar="PATH", help="run the tracker under cProfile, stats written to PATH")
    parser.add_argument("--trace", metavar="PATH", help="write the paced phase's requests (send time, latency, kind) as CSV to PATH")
    parser.add_argument("--trackers", type=int, default=1, help="tracker processes, sharing their state in Redis when more than one")
    parser.add_argument("--state", metavar="URL", help="redis://HOST:PORT/N for the trackers' state  [default: with --trackers > 1, "
                        "a redis-server of the benchmark's own; else the embedded state]")  # fmt: skip
    args = parser.parse_args()
    _raise_fd_limit(args.peers + 512)
    with contextlib.ExitStack() as stack:
        if args.trackers > 1 and args.state is None:
            args.state = stack.enter_context(_redis_server())
        _run(args)


@contextlib.contextmanager
def _redis_server() -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port, without persistence: its redis:// address."""
    path = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server; sh tests/system_packages.sh installs it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(500):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def _run(args: argparse.Namespace) -> None:

    load_average = os.getloadavg()[0]  # the machine is shared: say how busy it was
    with tempfile.TemporaryDirectory(prefix="chunkswarm-bench-") as tmp:
        caps = tracker_caps(args.peers)
        print(f"tracker caps raised for {args.peers} peers from one address (127.0.0.1): "
              + ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in caps.items()), file=sys.stderr)  # fmt: skip
        trackers: list[TrackerProcess] = []
        try:
            for i in range(args.trackers):
                trackers.append(TrackerProcess(os.path.join(tmp, f"tracker{i}.db"), 30.0, caps, args.profile, args.state))
            tracker = _Trackers(trackers)
            rss_idle = tracker.rss_mb()
            load = LoadGenerator([t.port for t in trackers], args, tracker.cpu_seconds)
            began = time.perf_counter()
            load.setup()
            setup_s = time.perf_counter() - began
            rss_loaded = tracker.rss_mb()
            print(f"set-up: {args.peers} peers, {args.files} files x {args.chunks} chunks announced in {setup_s:.1f}s; "
                  f"tracker RSS {rss_idle:.0f} -> {rss_loaded:.0f} MB", file=sys.stderr)  # fmt: skip

            cpu_before, own_before = tracker.cpu_seconds(), _own_cpu()
            elapsed = load.saturated(args.seconds)
            cpu_saturated = (load.cpu_at_end[0] - cpu_before) / elapsed
            own_saturated = (load.cpu_at_end[1] - own_before) / elapsed
            saturated = load.figures(elapsed, "saturated_")
            print(f"saturated (depth {args.depth}): {json.dumps(saturated)}; tracker CPU {cpu_saturated:.0%}, load generator CPU {own_saturated:.0%}", file=sys.stderr)

            cpu_before, own_before = tracker.cpu_seconds(), _own_cpu()
            elapsed = load.paced(args.seconds, args.rate)
            cpu_paced = (load.cpu_at_end[0] - cpu_before) / elapsed
            own_paced = (load.cpu_at_end[1] - own_before) / elapsed
            paced = load.figures(elapsed, "")
            if args.trace:
                load.write_trace(args.trace)
            print(f"paced at {args.rate:.0f}/s: {json.dumps(paced)}; tracker CPU {cpu_paced:.0%}, load generator CPU {own_paced:.0%}", file=sys.stderr)

            stats = load.tracker_stats()
            rss_end = tracker.rss_mb()
            per_peer_kb = (max(rss_loaded, rss_end) - rss_idle) * (1 << 20) / 1000 / args.peers
            print(f"tracker RSS {max(rss_loaded, rss_end):.0f} MB at most, {rss_idle:.0f} MB before the peers came: "
                  f"{per_peer_kb:.1f} KB per peer ({args.files} files each)", file=sys.stderr)  # fmt: skip
            rss_each = [round(t.rss_mb(), 1) for t in trackers]
        finally:
            code = max((t.stop() for t in trackers), default=0)
    result = {
        "peers": args.peers,
        "files": args.files,
        "chunks_per_file": args.chunks,
        "replicas": stats.get("replicas", 0),
        "offered_rate_per_s": args.rate,
        **paced,
        **saturated,
        "saturated_depth": args.depth,
        "tracker_cpu_saturated_pct": round(cpu_saturated * 100),
        "tracker_cpu_us_per_request": round(cpu_saturated * 1e6 / max(1, saturated["saturated_requests_per_s"]), 1),
        "tracker_cpu_paced_pct": round(cpu_paced * 100),
        "loadgen_cpu_saturated_pct": round(own_saturated * 100),
        "loadgen_cpu_paced_pct": round(own_paced * 100),
        "setup_s": round(setup_s, 2),
        "load_average_at_start": round(load_average, 2),
        "tracker_rss_mb": round(max(rss_loaded, rss_end), 1),
        "tracker_rss_idle_mb": round(rss_idle, 1),
        "tracker_rss_per_peer_kb": round(per_peer_kb, 2),
        "errors": load.errors,
        "tracker_requests_served": stats.get("requests", 0),
        "tracker_exit_code": code,
        "tracker_caps": caps,
        "trackers": args.trackers,
        "state": "redis" if args.state else "embedded",
        "tracker_rss_each_mb": rss_each,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
