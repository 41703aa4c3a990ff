"""Hostile input against both services: fuzzed conversations, slow clients, lying manifests, path escapes.

The fuzz tests drive the real connection handlers (``TrackerService.handle_stream``,
``ChunkServer.handle_stream``) over memory streams under a MockClock that jumps
whenever everything is blocked, so idle timeouts cost no wall time. Each example
checks that the handler closes the connection (it never raises), logs why, and
that a well-behaved client on the same service is still served afterwards.
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
import struct
import time
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codec import CLOSED, NEED_DATA, Codec
from common.errors import ChunkswarmError, IntegrityError, RemoteProtocolError
from common.framing import HEADER, MAGIC, PROTOCOL_VERSION, ErrorCode, Opcode
from common.manifest import Manifest, build_manifest, validate_name
from common.messages import (
    Announce,
    CancelChunk,
    ChunkData,
    Error,
    FileEntry,
    FileList,
    GetManifest,
    Heartbeat,
    Hello,
    Holders,
    ListFiles,
    Ok,
    Publish,
    Published,
    Register,
    RequestChunk,
    Stats,
    Welcome,
    WhoHas,
)
from peer.config import PeerConfig
from peer.connection import Connection
from peer.node import open_peer
from peer.server import ChunkServer
from peer.storage.library import Library, open_published
from peer.storage.part_file import PartFile
from tests.procs import rss_kib, start_tracker, wait_until
from tests.tracker_client_helper import TrackerTestClient, make_manifest, raw_frame
from tracker.config import IO_PATHS, TrackerConfig
from tracker.service import TrackerService
from tracker.store import Store

CHUNK = 1024
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# -- what a hostile client sends -------------------------------------------------------------
def _header(opcode: int, length: int, magic: bytes = MAGIC, version: int = PROTOCOL_VERSION) -> bytes:
    return HEADER.pack(magic, version, opcode, length)


NASTY_NAMES = ["../../etc/passwd", "..", ".", "a/b", "a\\b", "x\0y", "x" * 10_000, " lead", "tab\there", "\u2028", "ok.bin"]

any_length = st.one_of(st.integers(0, 64), st.sampled_from([2**16, 2**24, 2**24 + 4096, 2**24 + 4097, 2**31, 2**32 - 1]))
pieces = st.one_of(
    st.binary(max_size=64),  # garbage
    st.builds(lambda op, n, tail: _header(op, n) + tail, st.integers(0, 255), any_length, st.binary(max_size=32)),  # any opcode, any length
    st.builds(lambda op, body: _header(op, len(body)) + body, st.sampled_from(list(Opcode)), st.binary(max_size=80)),  # valid header, random payload
    st.builds(lambda fid, index: _header(Opcode.REQUEST_CHUNK, 36) + fid + struct.pack(">I", index),
              st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1)),  # chunk requests, any index
    st.builds(lambda name: raw_frame(Opcode.PUBLISH, [name, 1024, 1024, bytes(32), bytes(32)]), st.sampled_from(NASTY_NAMES)),
    st.builds(lambda fields: raw_frame(Opcode.ANNOUNCE, fields),
              st.lists(st.one_of(st.binary(max_size=40), st.integers(-2**63, 2**64 - 1), st.text(max_size=20)), max_size=3)),
    st.sampled_from([
        Codec().send(Hello(b"h" * 20, 6881)), Codec().send(Register(6881)), Codec().send(Heartbeat()), Codec().send(Stats()),
        Codec().send(ListFiles("", 10)), Codec().send(WhoHas(bytes(32), 5)), Codec().send(GetManifest(bytes(32))),
        Codec().send(RequestChunk(bytes(32), 0)), Codec().send(CancelChunk(bytes(32), 3)), Codec().send(Error(1, "x" * 1000)),
        Codec().send(Publish(make_manifest("fine.bin", chunks=3))), Codec().send(Announce(bytes(32), ((0, 1),))),
        Codec().send(ChunkData(bytes(32), 1, b"data")),
    ]),
)
conversations = st.lists(pieces, min_size=1, max_size=8)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _capture(name: str) -> tuple[logging.Logger, Records]:
    logger = logging.getLogger(name)
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, handler


async def _send_and_wait_for_close(stream: trio.abc.Stream, parts: list[bytes]) -> list[Any]:
    """Send ``parts`` (stopping if the server hangs up), then read until it closes; the messages it sent."""
    codec = Codec()
    received: list[Any] = []

    async def read() -> None:
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            try:
                codec.receive_data(data)
                while (event := codec.next_event()) is not NEED_DATA:
                    if event is CLOSED:
                        return
                    received.append(event)
            except RemoteProtocolError:
                return
            if not data:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for part in parts:
            try:
                await stream.send_all(part)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
    return received


# -- the tracker ---------------------------------------------------------------------------
@FUZZ
@given(conversation=conversations)
def test_tracker_survives_any_conversation(conversation: list[bytes]) -> None:
    config = TrackerConfig(heartbeat_interval=10.0, peer_timeout=30.0, idle_timeout=60.0, max_connections=8)
    logger, handler = _capture("tracker.connection")

    async def scenario() -> None:
        with Store(None) as store:
            service = TrackerService.create(config, store)
            async with trio.open_nursery() as nursery:
                client_stream, server_stream = trio.testing.memory_stream_pair()
                done = trio.Event()

                async def serve() -> None:
                    await service.handle_stream(server_stream, ("10.0.0.1", 40000))  # never raises
                    done.set()

                nursery.start_soon(serve)
                await _send_and_wait_for_close(client_stream, conversation)
                await done.wait()  # closed: by a violation, or by the idle timeout (the clock jumps)
                assert service.connections == 0
                bystander = TrackerTestClient(*_connect_tracker(service, nursery, "10.0.0.2"))
                await bystander.register()
                assert await bystander.request(Heartbeat()) == Ok()
                assert any("10.0.0.1:40000" in r.getMessage() for r in handler.records), "closed without a logged reason"
                await bystander.aclose()
                nursery.cancel_scope.cancel()

    try:
        trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logger.removeHandler(handler)


def _connect_tracker(service: TrackerService, nursery: trio.Nursery, host: str) -> tuple[trio.abc.Stream]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(service.handle_stream, server_stream, (host, 40000))
    return (client_stream,)


# -- the chunk server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Manifest, bytes]:
    path = tmp_path_factory.mktemp("share") / "data.bin"
    data = os.urandom(20 * CHUNK + 7)
    path.write_bytes(data)
    return path, build_manifest(path, CHUNK), data


def _library(path: pathlib.Path, manifest: Manifest) -> Library:
    st_ = os.stat(path)
    library = Library()
    library.add(open_published(path, manifest, (st_.st_size, st_.st_mtime_ns)))
    return library


@FUZZ
@given(conversation=conversations)
def test_chunk_server_survives_any_conversation(conversation: list[bytes], shared: tuple[pathlib.Path, Manifest, bytes]) -> None:
    path, manifest, data = shared
    logger, handler = _capture("peer.server")
    library = _library(path, manifest)

    async def scenario() -> None:
        server = ChunkServer(library, b"s" * 20, label="seed", handshake_timeout=5.0, idle_timeout=30.0)
        async with trio.open_nursery() as nursery:
            client_stream, server_stream = trio.testing.memory_stream_pair()
            done = trio.Event()

            async def serve() -> None:
                await server.handle_stream(server_stream)  # never raises
                done.set()

            nursery.start_soon(serve)
            received = await _send_and_wait_for_close(client_stream, conversation)
            await done.wait()
            assert server.active == 0
            for message in received:  # whatever it sent is the truth or a refusal
                if isinstance(message, ChunkData):
                    assert message.file_id == manifest.file_id
                    assert bytes(message.data) == data[message.index * CHUNK : (message.index + 1) * CHUNK]
            assert handler.records, "closed without a logged reason"
            # Someone else is served as before.
            a, b = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, b)
            conn = Connection(a)
            await conn.send(Hello(b"c" * 20, 1))
            assert isinstance(await conn.receive(), Welcome)
            await conn.send(RequestChunk(manifest.file_id, 2))
            assert await conn.receive() == ChunkData(manifest.file_id, 2, data[2 * CHUNK : 3 * CHUNK])
            await conn.aclose()
            nursery.cancel_scope.cancel()

    try:
        # The clock jumps only after 20 ms of real quiet: chunk reads run in worker threads here.
        trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0.02))
    finally:
        logger.removeHandler(handler)
        library.close()


@pytest.mark.parametrize("length", [2**14 + 1, 2**24, 2**32 - 1])
async def test_chunk_server_refuses_a_large_header_before_buffering(length: int, shared: tuple[pathlib.Path, Manifest, bytes]) -> None:
    path, manifest, _ = shared
    server = ChunkServer(_library(path, manifest), b"s" * 20)
    client, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_stream)
        await client.send_all(_header(Opcode.HELLO, length))  # no body follows: the header alone is refused
        received = await _send_and_wait_for_close(client, [])
    assert [(type(m), m.code) for m in received] == [(Error, ErrorCode.FRAME_TOO_LARGE)]


# -- slow and idle clients -------------------------------------------------------------------
SLOW = 200


async def _half_headers(port: int, count: int, prefix: bytes = b"") -> list[trio.SocketStream]:
    streams = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(prefix + _header(Opcode.HELLO, 20)[:4])
        streams.append(stream)
    return streams


async def _closed_by_server(stream: trio.SocketStream) -> None:
    while True:
        try:
            if not await stream.receive_some(65536):
                return
        except trio.BrokenResourceError:
            return


@pytest.mark.slow
@pytest.mark.parametrize("io", IO_PATHS)  # both socket paths of the tracker
async def test_tracker_drops_200_slow_clients_and_serves_others(tmp_path: pathlib.Path, io: str) -> None:
    async with trio.open_nursery() as procs:
        with trio.fail_after(30):
            # All the clients come from 127.0.0.1: the cap per address is raised above them, this is about slow clients.
            async with start_tracker(procs, tmp_path / "t.db", "--heartbeat-interval", "1", "--idle-timeout", "2", "--io", io,
                                     "--max-connections-per-ip", str(SLOW + 16)) as (tracker, port):  # fmt: skip
                rss_before = rss_kib(tracker.process.pid)
                slow = await _half_headers(port, SLOW)
                honest = TrackerTestClient(await trio.open_tcp_stream("127.0.0.1", port))
                started = time.monotonic()
                await honest.register()
                for _ in range(20):
                    assert await honest.request(Heartbeat()) == Ok()
                served_in = time.monotonic() - started
                async with trio.open_nursery() as waiters:
                    for stream in slow:
                        waiters.start_soon(_closed_by_server, stream)
                dropped_after = time.monotonic() - started
                rss_after = rss_kib(tracker.process.pid)
                for stream in slow:
                    await stream.aclose()
                await honest.aclose()
            procs.cancel_scope.cancel()
    print(f"\n[slow clients, tracker --io {io}] honest_requests_seconds={served_in:.3f} all_{SLOW}_dropped_after_s={dropped_after:.2f} "
          f"rss_kib_before={rss_before} rss_kib_after={rss_after}")


@pytest.mark.slow
async def test_chunk_server_drops_slow_and_idle_clients_and_serves_others(shared: tuple[pathlib.Path, Manifest, bytes]) -> None:
    path, manifest, data = shared
    server = ChunkServer(_library(path, manifest), b"s" * 20, max_connections=32, handshake_timeout=1.0, idle_timeout=1.0)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.serve, "127.0.0.1", 0)
        async def fetch(index: int) -> None:
            conn = Connection(await trio.open_tcp_stream(host, port))
            await conn.send(Hello(b"c" * 20, 1))
            assert isinstance(await conn.receive(), Welcome)
            await conn.send(RequestChunk(manifest.file_id, index))
            assert await conn.receive() == ChunkData(manifest.file_id, index, data[index * CHUNK : (index + 1) * CHUNK])
            await conn.aclose()

        with trio.fail_after(30):
            slow = await _half_headers(port, SLOW)
            await fetch(3)  # served while 200 half-headers hang
            # Past the handshake, then silent: these take every upload slot until the idle timeout.
            hello = Codec().send(Hello(b"i" * 20, 1))
            idle = await _half_headers(port, 40, prefix=hello)
            async with trio.open_nursery() as waiters:
                for stream in slow + idle:
                    waiters.start_soon(_closed_by_server, stream)
            await fetch(5)
            await wait_until(lambda: server.active == 0)
            for stream in slow + idle:
                await stream.aclose()
        nursery.cancel_scope.cancel()


# -- manifests that lie ---------------------------------------------------------------------
def _manifest_frame(name: str, size: int, chunk_size: int, file_id: bytes, hashes: bytes, opcode: Opcode = Opcode.MANIFEST) -> bytes:
    return raw_frame(opcode, [name, size, chunk_size, file_id, hashes])


@pytest.mark.parametrize("name", NASTY_NAMES[:-1])
def test_a_manifest_with_a_path_for_a_name_does_not_decode(name: str) -> None:
    for opcode in (Opcode.MANIFEST, Opcode.PUBLISH):
        codec = Codec()
        codec.receive_data(_manifest_frame(name, 1024, 1024, bytes(32), bytes(32), opcode))
        with pytest.raises(RemoteProtocolError):
            codec.next_event()


def test_a_manifest_whose_size_does_not_match_its_hashes_does_not_decode() -> None:
    codec = Codec()
    codec.receive_data(_manifest_frame("a.bin", 10 * 1024, 1024, bytes(32), bytes(32 * 3)))
    with pytest.raises(RemoteProtocolError, match="needs 10 chunk hashes"):
        codec.next_event()


async def test_the_tracker_refuses_a_manifest_whose_root_is_wrong() -> None:
    with Store(None) as store:
        service = TrackerService.create(TrackerConfig(), store)
        async with trio.open_nursery() as nursery:
            (stream,) = _connect_tracker(service, nursery, "10.0.0.1")
            client = TrackerTestClient(stream)
            await client.register()
            good = make_manifest("liar.bin", chunks=4)
            forged = Manifest(good.name, good.size, good.chunk_size, good.chunk_hashes, bytes(32))
            await client.expect_error(Publish(forged), ErrorCode.INVALID_MANIFEST)
            assert list(store.load()) == []
            await client.aclose()


class LyingTracker:
    """Answers like a tracker, but GET_MANIFEST gets ``manifest_frame``, whatever it is."""

    def __init__(self, manifest_frame: bytes, entry: FileEntry) -> None:
        self.manifest_frame = manifest_frame
        self.entry = entry

    async def handle(self, stream: trio.SocketStream) -> None:
        codec = Codec()
        try:
            while True:
                codec.receive_data(await stream.receive_some(65536))
                while (event := codec.next_event()) is not NEED_DATA and event is not CLOSED:
                    if isinstance(event, Hello):
                        reply = codec.send(Welcome(b"t" * 20, 0, "127.0.0.1", 1, 1, "liar"))
                    elif isinstance(event, ListFiles):
                        reply = codec.send(FileList([self.entry]))
                    elif isinstance(event, GetManifest):
                        reply = self.manifest_frame
                    elif isinstance(event, WhoHas):
                        reply = codec.send(Holders(event.file_id, ()))
                    else:
                        reply = codec.send(Ok())
                    await stream.send_all(reply)
        except (trio.BrokenResourceError, ChunkswarmError):
            pass


@pytest.mark.parametrize("lie", ["root", "count"])
async def test_a_downloader_refuses_a_lying_manifest(lie: str, tmp_path: pathlib.Path) -> None:
    good = make_manifest("lie.bin", chunks=4)
    if lie == "root":
        frame = _manifest_frame(good.name, good.size, good.chunk_size, bytes(32), b"".join(good.chunk_hashes))
        file_id = bytes(32)
    else:
        frame = _manifest_frame(good.name, good.size * 2, good.chunk_size, good.file_id, b"".join(good.chunk_hashes))
        file_id = good.file_id
    fake = LyingTracker(frame, FileEntry(file_id, good.name, good.size, good.chunk_size, 4, 1, 1))
    out = tmp_path / "out"
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, fake.handle, 0)
        port = listeners[0].socket.getsockname()[1]
        config = PeerConfig(tracker=("127.0.0.1", port), state_dir=tmp_path / "state", tracker_timeout=2.0)
        with trio.fail_after(20):
            async with open_peer(config) as peer:
                await peer.connect()
                with pytest.raises(ChunkswarmError) as caught:
                    await peer.download("lie.bin", out)
        nursery.cancel_scope.cancel()
    if lie == "root":
        assert isinstance(caught.value, IntegrityError)
    assert not out.exists() or list(out.iterdir()) == []


# -- nothing escapes the share and download directories ---------------------------------------
@settings(max_examples=300, deadline=None)
@given(name=st.text(min_size=1, max_size=80))
def test_any_name_a_manifest_can_carry_stays_inside_the_download_directory(name: str) -> None:
    try:
        validate_name(name)
    except ChunkswarmError:
        return  # such a manifest cannot even be decoded
    out = pathlib.Path("/srv/downloads")
    manifest = Manifest.from_hashes(name, 0, 1024, [])
    part = PartFile(manifest, out / manifest.name)
    for path in (part.final_path, part.path, part.state_path):
        assert path.parent == out and os.path.normpath(path) == str(path)
        assert re.fullmatch(r"[^/\\\x00]+", path.name)


async def test_the_tracker_bounds_memory_held_for_unfinished_large_frames() -> None:
    """Headers and half bodies of 16 MiB PUBLISH frames, from clients that never registered: BUSY beyond the budget."""
    config = TrackerConfig(max_buffered=TrackerConfig().max_frame_size + 1)
    with Store(None) as store:
        service = TrackerService.create(config, store)
        async with trio.open_nursery() as nursery:
            clients = []
            for index in range(3):
                (stream,) = _connect_tracker(service, nursery, f"10.0.0.{index + 1}")
                client = TrackerTestClient(stream)
                await client.hello()
                await client.send_raw(_header(Opcode.PUBLISH, 2**24) + b"\x95" + bytes(6 * 2**20))  # an 8 MiB body buffer each
                await trio.testing.wait_all_tasks_blocked()
                clients.append(client)
            assert service.buffered <= config.max_buffered
            with trio.fail_after(10):
                refused = await clients[-1].closed_after()
            assert [(type(m), m.code) for m in refused] == [(Error, ErrorCode.BUSY)]  # type: ignore[union-attr]
            for client in clients:
                await client.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert service.buffered == 0 and service.connections == 0


# -- out of order, named explicitly (the fuzzers reach these too, by chance) ---------------------
async def test_a_chunk_request_before_the_handshake_is_refused_and_logged(
    shared: tuple[pathlib.Path, Manifest, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    path, manifest, _ = shared
    server = ChunkServer(_library(path, manifest), b"s" * 20)
    client, server_stream = trio.testing.memory_stream_pair()
    with caplog.at_level(logging.INFO, logger="peer.server"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_stream, server_stream)
            received = await _send_and_wait_for_close(client, [Codec().send(RequestChunk(manifest.file_id, 0))])
    assert [(type(m), m.code) for m in received] == [(Error, ErrorCode.BAD_REQUEST)]
    assert any("REQUEST_CHUNK before HELLO" in r.getMessage() for r in caplog.records)


async def test_a_publish_before_register_is_refused_and_the_connection_stays_usable() -> None:
    with Store(None) as store:
        service = TrackerService.create(TrackerConfig(), store)
        async with trio.open_nursery() as nursery:
            (stream,) = _connect_tracker(service, nursery, "10.0.0.1")
            client = TrackerTestClient(stream)
            await client.hello(6881)
            manifest = make_manifest("early.bin", chunks=2)
            await client.expect_error(Publish(manifest), ErrorCode.NOT_REGISTERED)
            await client.expect_error(Announce(manifest.file_id, ((0, 2),)), ErrorCode.NOT_REGISTERED)
            assert await client.request(Register(6881)) == Ok()
            assert await client.request(Publish(manifest)) == Published(manifest.file_id)
            assert [m.name for m in store.load()] == ["early.bin"]
            await client.aclose()
