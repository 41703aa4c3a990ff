"""The tracker over real loopback sockets, and as a process that is killed and restarted.

Every test on a real socket runs on both socket paths (the ``io`` fixture):
``"epoll"``, the readiness hub's fast path (``tracker.hub``), and ``"streams"``,
trio's generic streams. A test of the hub alone says so and runs on epoll only.
"""

from __future__ import annotations

import contextvars
import gc
import logging
import os
import pathlib
import re
import select
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable

import pytest
import trio
import trio.testing
from click.testing import CliRunner

import chunkswarm.tracker_command
from chunkswarm.tracker_command import tracker_command
from common.codec import CLOSED, NEED_DATA, Codec
from common.framing import HEADER, MAGIC, PROTOCOL_VERSION, ErrorCode, Opcode
from common.manifest import Manifest
from common.messages import (
    Announce,
    Error,
    FileList,
    GetManifest,
    Heartbeat,
    Hello,
    Holders,
    ListFiles,
    ManifestReply,
    Message,
    Ok,
    Publish,
    Published,
    Register,
    Stats,
    StatsReply,
    Welcome,
    WhoHas,
)
from tests.tracker_client_helper import make_manifest, open_client
from tracker import handlers
from tracker.config import MIN_FRAME_SIZE, IoPath, TrackerConfig
from tracker.connection import RECEIVE_SIZE, Connection
from tracker.registry import Registry
from tracker.service import RunningTracker, TrackerService, serve_tracker
from tracker.store import Store

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: Generous bounds for real processes and sockets; a test that hits one has failed.
TIMEOUT = 15


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(
    params=[pytest.param("epoll", marks=pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux only")), "streams"]
)
def io(request: pytest.FixtureRequest) -> IoPath:
    """Each socket path in turn: CI runs both."""
    path: IoPath = request.param
    return path


async def start(nursery: trio.Nursery, config: TrackerConfig) -> RunningTracker:
    """A tracker on ``config``, checked to be on the socket path it asks for."""
    running: RunningTracker = await nursery.start(serve_tracker, config)
    assert (running.service.hub is not None) == (config.io == "epoll")
    return running


@pytest.fixture
async def tracker(nursery: trio.Nursery, io: IoPath, state: str | None) -> RunningTracker:
    """A tracker on each socket path and each state backend (``tests/conftest.py``)."""
    return await start(nursery, TrackerConfig(port=0, io=io, state=state))


async def test_two_peers_find_each_other(tracker: RunningTracker) -> None:
    assert tracker.port != 0
    with trio.fail_after(TIMEOUT):
        seeder = await open_client(tracker.host, tracker.port)
        leecher = await open_client(tracker.host, tracker.port)
        await seeder.register(7001)
        await leecher.register(7002)
        manifest = make_manifest("song.ogg", chunks=6)
        assert await seeder.request(Publish(manifest)) == Published(manifest.file_id)
        assert await seeder.request(Announce(manifest.file_id, ((0, 6),))) == Ok()
        reply = await leecher.request(WhoHas(manifest.file_id))
        assert isinstance(reply, Holders)
        [holder] = reply.holders
        assert (holder.peer_id, holder.host, holder.port, holder.bitfield) == (seeder.peer_id, "127.0.0.1", 7001, b"\xfc")
        stats = tracker.stats()
        assert (stats["peers"], stats["files"], stats["replicas"], stats["connections"]) == (2, 1, 1, 2)
        await seeder.aclose()
        await leecher.aclose()


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1) to listen on; the same path is tested over IPv4")
async def test_ipv6(nursery: trio.Nursery, io: IoPath) -> None:
    with trio.fail_after(TIMEOUT):
        running = await start(nursery, TrackerConfig(host="::1", port=0, io=io))
        client = await open_client("::1", running.port)
        welcome = await client.hello()
        assert welcome.observed_host == "::1"
        await client.aclose()


async def test_garbage_and_oversize_frames_close_only_the_offender(tracker: RunningTracker) -> None:
    with trio.fail_after(TIMEOUT):
        honest = await open_client(tracker.host, tracker.port)
        await honest.register()
        oversize = HEADER.pack(MAGIC, PROTOCOL_VERSION, Opcode.PUBLISH, 0xFFFFFFFF)
        for data, code in ((b"\x00garbage" * 100, ErrorCode.BAD_REQUEST), (oversize, ErrorCode.FRAME_TOO_LARGE)):
            offender = await open_client(tracker.host, tracker.port)
            await offender.hello()
            await offender.send_raw(data)
            messages = await offender.closed_after()
            assert [(type(m), m.code) for m in messages] == [(Error, code)]  # type: ignore[union-attr]
            await offender.aclose()
            assert await honest.request(Heartbeat()) == Ok()
        assert tracker.stats()["connections"] == 1
        await honest.aclose()


async def test_a_large_manifest_goes_through(tracker: RunningTracker) -> None:
    manifest = make_manifest("large.img", chunks=20_000)  # a 640 KB frame, checked in a worker thread
    with trio.fail_after(TIMEOUT):
        client = await open_client(tracker.host, tracker.port)
        await client.register()
        assert await client.request(Publish(manifest)) == Published(manifest.file_id)
        assert await client.request(GetManifest(manifest.file_id)) == ManifestReply(manifest)
        await client.aclose()



async def test_a_pipelined_batch_larger_than_one_read_is_answered_whole(tracker: RunningTracker) -> None:
    # The readiness hub reports only data that arrived since its last event, so
    # the tracker must read on while reads fill its buffer (RECEIVE_SIZE).
    with trio.fail_after(TIMEOUT):
        client = await open_client(tracker.host, tracker.port)
        await client.register()
        count = 3 * RECEIVE_SIZE // len(client.codec.send(Heartbeat())) + 1
        await client.send(*[Heartbeat()] * count)
        for _ in range(count):
            assert await client.receive() == Ok()
        await client.aclose()


async def test_replies_keep_their_order_around_a_publish_in_the_same_batch(tracker: RunningTracker) -> None:
    # The readiness hub answers the requests of a read itself, but a PUBLISH must
    # wait for the store in the connection's task: the replies still come in order.
    manifest = make_manifest("batch.bin", chunks=3)
    with trio.fail_after(TIMEOUT):
        client = await open_client(tracker.host, tracker.port)
        await client.register()
        await client.send(Heartbeat(), Publish(manifest), GetManifest(manifest.file_id), Heartbeat())
        replies = [await client.receive() for _ in range(4)]
        assert replies == [Ok(), Published(manifest.file_id), ManifestReply(manifest), Ok()]
        await client.aclose()


async def test_a_client_that_reads_slowly_gets_every_large_reply_whole(tracker: RunningTracker) -> None:
    # 80 manifests of 128 KB asked for at once, while the client reads nothing for
    # a moment: 10 MB of replies outgrow the socket buffers (both the hub's direct
    # write and the task's are cut short), and the rest waits for the client.
    manifest = make_manifest("large.img", chunks=4000)
    count = 80
    with trio.fail_after(TIMEOUT):
        client = await open_client(tracker.host, tracker.port)
        await client.register()
        assert await client.request(Publish(manifest)) == Published(manifest.file_id)
        await client.send(*[GetManifest(manifest.file_id)] * count)
        await trio.sleep(0.2)
        for _ in range(count):
            assert await client.receive() == ManifestReply(manifest)
        assert await client.request(Heartbeat()) == Ok()
        await client.aclose()


def _one_bug() -> Exception:
    return RuntimeError("a bug in the registry")


def _a_group_of_bugs() -> Exception:
    return ExceptionGroup("bugs in the registry", [RuntimeError("the first bug"), KeyError("the second bug")])


@pytest.mark.parametrize("bug", [_one_bug, _a_group_of_bugs], ids=["error", "group"])
async def test_a_failure_while_answering_closes_only_that_connection(
    tracker: RunningTracker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, bug: Callable[[], Exception]
) -> None:
    # A bug met while the hub answers for a parked connection ends that connection,
    # reported by its own task, and the hub goes on serving the others. An
    # exception group is logged whole: every member, not the first.
    manifest = make_manifest("boom.bin")
    raised = bug()

    def broken(*args: object, **kwargs: object) -> None:
        raise raised

    with trio.fail_after(TIMEOUT):
        honest = await open_client(tracker.host, tracker.port)
        victim = await open_client(tracker.host, tracker.port)
        await honest.register()
        await victim.register()
        assert await honest.request(Publish(manifest)) == Published(manifest.file_id)
        monkeypatch.setattr(Registry, "announce", broken)
        await victim.send(Announce(manifest.file_id, ((0, 1),)))
        messages = await victim.closed_after()
        assert [(type(m), m.code) for m in messages] == [(Error, ErrorCode.INTERNAL)]  # type: ignore[union-attr]
        assert await honest.request(Heartbeat()) == Ok()
        await victim.aclose()
        await honest.aclose()
    [record] = [r for r in caplog.records if r.getMessage().startswith("internal error on the connection")]
    assert record.exc_info is not None and record.exc_info[1] is raised
    logged = logging.Formatter().format(record)
    members = raised.exceptions if isinstance(raised, ExceptionGroup) else [raised]
    assert all(str(member) in logged for member in members), logged


# -- where a handler runs ------------------------------------------------------------
#: Set by each connection's own task, as access control would set who is asking.
_asker: contextvars.ContextVar[int] = contextvars.ContextVar("asker")


@pytest.fixture
def connection_tasks(monkeypatch: pytest.MonkeyPatch) -> dict[int, trio.lowlevel.Task]:
    """Each connection's own task, by the client's port; each sets ``_asker`` to that port (trackers started after)."""
    tasks: dict[int, trio.lowlevel.Task] = {}
    serve_socket = TrackerService.serve_socket

    async def serve_socket_as_asker(self: TrackerService, stream: trio.SocketStream) -> None:
        port = stream.socket.getpeername()[1]
        tasks[port] = trio.lowlevel.current_task()
        _asker.set(port)
        await serve_socket(self, stream)

    monkeypatch.setattr(TrackerService, "serve_socket", serve_socket_as_asker)
    return tasks


async def _ask_in_turns(running: RunningTracker, request: Message, *, clients: int = 2, times: int = 3) -> None:
    """``clients`` registered clients each send ``request`` ``times``, one request in flight, taking turns."""
    with trio.fail_after(TIMEOUT):
        connected = [await open_client(running.host, running.port) for _ in range(clients)]
        for client in connected:
            await client.register()
        for _ in range(times):
            for client in connected:
                reply = await client.request(request)
                assert not isinstance(reply, Error), reply
        for client in connected:
            await client.aclose()


async def test_a_handler_on_the_fast_path_runs_in_its_connections_context(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, connection_tasks: dict[int, trio.lowlevel.Task]
) -> None:
    # Epoll only: the hub's fast path. It answers a parked connection's request in
    # the hub's task, where the handler must still see what that connection's own
    # task set (who is asking, for access control), not what the hub's task has.
    seen: list[tuple[int, int | None, trio.lowlevel.Task]] = []

    def heartbeat(connection: Connection, request: Heartbeat) -> bytes:
        seen.append((connection.port, _asker.get(None), trio.lowlevel.current_task()))
        return handlers.heartbeat(connection, request)

    monkeypatch.setitem(handlers.REQUESTS.fast, Heartbeat, heartbeat)
    running = await start(nursery, TrackerConfig(port=0, io="epoll"))
    await _ask_in_turns(running, Heartbeat())
    assert len(seen) == 6 and len({port for port, _, _ in seen}) == 2
    for port, asker, task in seen:
        assert task is not connection_tasks[port]  # answered on the fast path, or this test tests nothing
        assert asker == port


async def test_a_request_not_declared_fast_is_answered_in_its_connections_task(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, connection_tasks: dict[int, trio.lowlevel.Task], io: IoPath
) -> None:
    # On epoll the hub reads the request while the connection's task is parked, and
    # must hand it over rather than answer it: only Handlers.fast runs in the hub.
    seen: list[tuple[int, trio.lowlevel.Task]] = []

    async def stats(connection: Connection, request: Stats) -> bytes:
        seen.append((connection.port, trio.lowlevel.current_task()))
        return handlers.stats(connection, request)

    monkeypatch.delitem(handlers.REQUESTS.fast, Stats)
    monkeypatch.setitem(handlers.REQUESTS.task, Stats, stats)
    running = await start(nursery, TrackerConfig(port=0, io=io))
    await _ask_in_turns(running, Stats())
    assert len(seen) == 6 and len({port for port, _ in seen}) == 2
    for port, task in seen:
        assert task is connection_tasks[port]


# -- the end of the stream -------------------------------------------------------------
async def _send_then_close(tracker: RunningTracker, *batches: bytes) -> socket.socket:
    """A plain socket that sends ``batches`` and then closes its end, with no yield between the last two.

    The tracker runs in this same event loop, so the last batch and the end of
    the stream reach its socket before it reads either: one readiness event.
    """
    sock = socket.create_connection((tracker.host, tracker.port))
    await trio.sleep(0.05)  # the connection's task is waiting for a request
    for batch in batches[:-1]:
        sock.sendall(batch)
        await trio.sleep(0.05)  # the tracker is busy with this batch when the next one comes
    sock.sendall(batches[-1])
    sock.shutdown(socket.SHUT_WR)
    return sock


async def _replies_until_closed(sock: socket.socket, count: int | None = None) -> list[Message]:
    """The replies on ``sock`` until the tracker closes it (or ``count`` of them); closes ``sock``."""
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    codec = Codec()
    replies: list[Message] = []
    while True:
        with trio.fail_after(TIMEOUT):  # the tracker's idle timeout is far longer
            data = await stream.receive_some(65536)
        codec.receive_data(data)
        while (event := codec.next_event()) is not NEED_DATA:
            if event is not CLOSED:
                replies.append(event)  # type: ignore[arg-type]
            if event is CLOSED or len(replies) == count:
                await stream.aclose()
                return replies


async def test_requests_and_the_end_of_the_stream_in_one_read_are_answered_and_closed(tracker: RunningTracker) -> None:
    # Edge-triggered readiness reports the client's close once, with its last data:
    # after answering, the tracker must read on to the end of the stream, not wait.
    codec = Codec()
    sock = await _send_then_close(tracker, codec.send(Hello(os.urandom(20), 7000)) + codec.send(Register(7000)))
    replies = await _replies_until_closed(sock)
    assert [type(r) for r in replies] == [Welcome, Ok]
    assert tracker.stats()["connections"] == 0


async def test_a_close_that_comes_while_a_publish_is_stored_is_seen(tracker: RunningTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    # The close arrives while the connection's task waits for the store (a slow
    # disk here), so the hub can only note it for the task.
    store = tracker.service.store
    save = store.save

    def slow_save(manifest: Manifest, publisher: bytes | None = None) -> None:
        time.sleep(0.3)  # in the worker thread
        save(manifest, publisher)

    monkeypatch.setattr(store, "save", slow_save)
    codec = Codec()
    manifest = make_manifest("closing.bin")
    sock = await _send_then_close(
        tracker,
        codec.send(Hello(os.urandom(20), 7000)) + codec.send(Register(7000)) + codec.send(Publish(manifest)),
        codec.send(Heartbeat()),
    )
    replies = await _replies_until_closed(sock)
    assert replies[2:] == [Published(manifest.file_id), Ok()]


async def test_requests_after_urgent_data_are_not_left_unread(tracker: RunningTracker) -> None:
    # A read stops at TCP's urgent mark, so a short read then does not mean the socket is empty.
    codec = Codec()
    sock = socket.create_connection((tracker.host, tracker.port))
    await trio.sleep(0.05)  # the connection's task is waiting for a request
    sock.send(codec.send(Hello(os.urandom(20), 7000)) + b"!", socket.MSG_OOB)  # "!" is urgent (out of band)
    sock.sendall(codec.send(Register(7000)))  # before the tracker reads: one readiness event for both
    assert [type(r) for r in await _replies_until_closed(sock, count=2)] == [Welcome, Ok]


async def test_closed_connections_are_freed_by_reference_counting(tracker: RunningTracker) -> None:
    # The tracker CLI moves long-lived objects out of the cyclic collector's reach
    # (gc.freeze in tracker/cli.py), so a connection caught in a reference cycle
    # would stay in memory for good once closed: each must go without that collector.
    manifest = make_manifest("freed.bin")
    gc.collect()
    gc.disable()
    try:
        with trio.fail_after(TIMEOUT):
            peer = await open_client(tracker.host, tracker.port)
            await peer.register()
            assert await peer.request(Publish(manifest)) == Published(manifest.file_id)
            assert isinstance(await peer.request(ListFiles()), FileList)
            assert isinstance(await peer.request(WhoHas(manifest.file_id)), Holders)
            rude = await open_client(tracker.host, tracker.port)
            await rude.hello()
            truncated = await open_client(tracker.host, tracker.port)
            await truncated.hello()
            await truncated.send_raw(truncated.codec.send(Heartbeat())[:5])
            await truncated.stream.send_eof()  # type: ignore[attr-defined]
            strangers = [await open_client(tracker.host, tracker.port) for _ in range(2)]
            for client, data in ((rude, b"\x00garbage"), (strangers[0], b"GET / HTTP/1.1\r\n\r\n")):
                await client.send_raw(data)
            for client in (rude, truncated, strangers[0]):
                assert [type(m) for m in await client.closed_after()] == [Error]
            for client in (peer, rude, truncated, *strangers):
                await client.aclose()
            while tracker.stats()["connections"]:
                await trio.sleep(0.01)
            # A connection is counted out before its socket is closed: let the tasks end.
            await trio.testing.wait_all_tasks_blocked()
        assert [o for o in gc.get_objects() if isinstance(o, Connection)] == []
    finally:
        gc.enable()


async def test_a_client_that_floods_does_not_keep_the_others_waiting(tracker: RunningTracker) -> None:
    # Big requests with 9-byte answers keep a flooder's socket full: every read fills
    # the buffer, and the answers never reach the flush size. The tracker must still
    # let the other tasks run between reads, not answer the whole flood in one go.
    manifest = make_manifest("flooded.bin", chunks=4096)
    codec = Codec()
    ranges = tuple((i, i + 1) for i in range(0, 4096, 32))  # 128 ranges: a 1.2 KB request
    request = codec.send(Announce(manifest.file_id, ranges))
    with trio.fail_after(TIMEOUT):
        seeder = await open_client(tracker.host, tracker.port)
        await seeder.register()
        assert await seeder.request(Publish(manifest)) == Published(manifest.file_id)
        flooder = socket.create_connection((tracker.host, tracker.port))
        flooder.sendall(codec.send(Hello(os.urandom(20), 7000)) + codec.send(Register(7000)))
        await trio.sleep(0.05)
        # All at once while the tracker cannot run: as much as the socket buffers take.
        flooder.setblocking(False)
        flood = flooder.send(request * 1000)
        count = flood // len(request)
        assert flood >= 8 * RECEIVE_SIZE, f"only {flood} bytes of flood queued"
        start = tracker.stats()["requests"]
        seen = []
        while (served := tracker.stats()["requests"]) < start + count:
            seen.append(served)
            await trio.lowlevel.checkpoint()  # the other tasks' turn, as a timer's or another client's
        # Requests answered between two turns of this task: a few reads' worth, not the whole queue.
        steps = [after - before for before, after in zip(seen, [*seen[1:], start + count], strict=False)]
        assert max(steps) <= 3 * (RECEIVE_SIZE // len(request) + 1), steps
        flooder.close()
        await seeder.aclose()


async def test_slow_readers_of_a_large_manifest_share_one_copy_and_hold_off_listings(nursery: trio.Nursery, io: IoPath) -> None:
    # A manifest reply is encoded once and shared by every connection sending it;
    # what clients have not read is counted, and past max_unsent the tracker
    # refuses new listings (megabytes each) until they catch up.
    config = TrackerConfig(port=0, max_unsent=MIN_FRAME_SIZE, io=io)
    running = await start(nursery, config)
    manifest = make_manifest("large.iso", chunks=1 << 17)  # a 4 MiB frame
    codec = Codec()
    asking = codec.send(Hello(os.urandom(20), 0)) + codec.send(GetManifest(manifest.file_id)) * 4
    with trio.fail_after(TIMEOUT):
        publisher = await open_client(running.host, running.port)
        await publisher.register()
        assert await publisher.request(Publish(manifest)) == Published(manifest.file_id)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            readers = []
            for _ in range(8):
                reader = socket.create_connection((running.host, running.port))
                reader.sendall(asking)  # and read nothing for now
                readers.append(reader)
            while running.service.unsent <= config.max_unsent:
                await trio.sleep(0.01)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 8 * 1024 * 1024  # the one encoded frame (4 MiB); copies would be 8 x 4 x 4 MiB
        error = await publisher.expect_error(ListFiles(), ErrorCode.BUSY)
        assert "not read" in error.message
        for reader in readers:
            reader.close()
        while running.service.unsent:
            await trio.sleep(0.01)
        assert isinstance(await publisher.request(ListFiles()), FileList)
        await publisher.aclose()


async def test_an_idle_socket_is_closed(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, io: IoPath) -> None:
    # The idle timeout cancels a task parked in the readiness hub, or in trio's wait for its socket.
    config = TrackerConfig(port=0, idle_timeout=60.0, io=io)
    running = await start(nursery, config)
    client = await open_client(running.host, running.port)
    await client.hello()
    with trio.fail_after(2 * config.idle_timeout):
        messages = await client.closed_after()
    assert [(type(m), m.code) for m in messages] == [(Error, ErrorCode.TIMEOUT)]  # type: ignore[union-attr]
    await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert running.stats()["connections"] == 0


async def test_stopping_with_connections_open_is_quiet(caplog: pytest.LogCaptureFixture, io: IoPath) -> None:
    # Connection tasks end before the readiness hub's epoll is closed.
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            running = await start(nursery, TrackerConfig(port=0, io=io))
            clients = [await open_client(running.host, running.port) for _ in range(3)]
            for client in clients:
                await client.hello()
            nursery.cancel_scope.cancel()
        for client in clients:
            await client.aclose()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []

# -- the process ---------------------------------------------------------------
class TrackerProcess:
    """``python -m chunkswarm tracker`` as a child: started, its listening port read from its log."""

    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port


async def _start_tracker(nursery: trio.Nursery, db: pathlib.Path, *extra: str) -> TrackerProcess:
    command = [sys.executable, "-m", "chunkswarm", "tracker", "--port", "0", "--db", str(db), "--heartbeat-interval", "5", *extra]
    process = await trio.lowlevel.open_process(command, cwd=ROOT, stderr=subprocess.PIPE)
    assert process.stderr is not None
    log = bytearray()
    with trio.fail_after(TIMEOUT):
        while not (found := re.search(rb"tracker listening on 127\.0\.0\.1:(\d+)", log)):
            data = await process.stderr.receive_some()
            assert data, f"tracker exited before listening: {log.decode(errors='replace')}"
            log += data

    async def drain() -> None:  # keep reading its log so it never blocks on a full pipe
        assert process.stderr is not None
        async with process.stderr:
            while await process.stderr.receive_some():
                pass

    nursery.start_soon(drain)
    return TrackerProcess(process, int(found.group(1)))


@pytest.fixture
async def child_nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def test_a_killed_tracker_restarts_with_its_catalogue(tmp_path: pathlib.Path, child_nursery: trio.Nursery, io: IoPath) -> None:
    db = tmp_path / "tracker.db"
    manifest = make_manifest("kept.iso", chunks=10)
    peer_id = os.urandom(20)
    with trio.fail_after(TIMEOUT):
        first = await _start_tracker(child_nursery, db, "--io", io)
        seeder = await open_client("127.0.0.1", first.port, peer_id)
        await seeder.register(7001)
        assert await seeder.request(Publish(manifest)) == Published(manifest.file_id)
        first.process.send_signal(signal.SIGKILL)  # no clean shutdown: the reply must have meant "on disk"
        await first.process.wait()
        await seeder.aclose()

        second = await _start_tracker(child_nursery, db, "--io", io)
        try:
            browser = await open_client("127.0.0.1", second.port)
            await browser.hello()
            listing = await browser.request(ListFiles())
            assert isinstance(listing, FileList)
            assert [(e.file_id, e.name, e.holders) for e in listing.entries] == [(manifest.file_id, "kept.iso", 0)]
            # Replicas were soft state: the peer registers again and re-announces.
            seeder = await open_client("127.0.0.1", second.port, peer_id)
            await seeder.hello(7001)
            await seeder.expect_error(Heartbeat(), ErrorCode.NOT_REGISTERED)
            assert await seeder.request(Register(7001)) == Ok()
            assert await seeder.request(Publish(manifest)) == Published(manifest.file_id)  # idempotent
            assert await seeder.request(Announce(manifest.file_id, ((0, 10),))) == Ok()
            reply = await browser.request(WhoHas(manifest.file_id))
            assert isinstance(reply, Holders) and [h.peer_id for h in reply.holders] == [peer_id]
            await browser.aclose()
            await seeder.aclose()
        finally:
            second.process.send_signal(signal.SIGTERM)
        assert await second.process.wait() == 0  # SIGTERM: a clean exit
    with Store(db) as store:
        assert list(store.load()) == [manifest]


async def test_sigint_shuts_down_cleanly(tmp_path: pathlib.Path, child_nursery: trio.Nursery, io: IoPath) -> None:
    with trio.fail_after(TIMEOUT):
        running = await _start_tracker(child_nursery, tmp_path / "t.db", "--log-level", "debug", "--io", io)
        client = await open_client("127.0.0.1", running.port)
        await client.hello()
        assert isinstance(await client.request(Stats()), StatsReply)
        running.process.send_signal(signal.SIGINT)
        assert await running.process.wait() == 0
        assert await client.closed_after() == []
        await client.aclose()
    assert not (tmp_path / "t.db-wal").exists()  # the database was closed (WAL checkpointed)


def test_cli_refuses_bad_settings_with_a_message() -> None:
    runner = CliRunner()
    result = runner.invoke(tracker_command, ["--heartbeat-interval", "10", "--peer-timeout", "5", "--db", "x.db"])
    assert result.exit_code == 1 and "peer_timeout" in result.output
    result = runner.invoke(tracker_command, ["--heartbeat-interval", "10", "--idle-timeout", "10", "--db", "x.db"])
    assert result.exit_code == 1 and "idle_timeout (10s) must exceed heartbeat_interval (10s)" in result.output
    result = runner.invoke(tracker_command, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--db", "--peer-timeout", "--heartbeat-interval", "--io", "--log-level"):
        assert option in result.output
    result = runner.invoke(tracker_command, ["--io", "kqueue", "--db", "x.db"])
    assert result.exit_code == 2 and "'kqueue' is not one of" in result.output


def test_cli_passes_the_socket_path_on(io: IoPath, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Else the process tests above would run the default path twice.
    configs: list[TrackerConfig] = []

    async def run(config: TrackerConfig) -> None:
        configs.append(config)

    monkeypatch.setattr(chunkswarm.tracker_command, "_run_until_signal", run)
    result = CliRunner().invoke(tracker_command, ["--io", io, "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 0, result.output
    assert [config.io for config in configs] == [io]


def test_an_unusable_database_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "not-a-db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = CliRunner().invoke(tracker_command, ["--port", "0", "--db", str(bad)])
    assert result.exit_code == 1 and "tracker database" in result.output


def test_codec_frames_fit_the_default_cap() -> None:
    # The largest legitimate tracker frame, a PUBLISH of a MAX_CHUNKS manifest, fits the default cap.
    from common.manifest import MAX_CHUNKS, Manifest

    manifest = Manifest("big", MAX_CHUNKS * 1024, 1024, [bytes(32)] * MAX_CHUNKS, bytes(32))
    assert len(Codec(max_frame_size=TrackerConfig().max_frame_size).send(Publish(manifest))) > 16 * 1024 * 1024
