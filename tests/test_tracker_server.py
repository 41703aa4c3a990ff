"""The tracker's trio shell over memory streams: conversations, errors, timeouts, limits."""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator

import attrs
import msgpack
import pytest
import trio
import trio.testing

import tracker.connection
import tracker.greeting
import tracker.handlers
from common.codec import Codec
from common.framing import HEADER, MAGIC, PROTOCOL_VERSION, ErrorCode, Opcode
from common.manifest import Manifest
from common.messages import (
    Announce,
    Deregister,
    Error,
    FileEntry,
    FileList,
    GetManifest,
    Heartbeat,
    Hello,
    Holder,
    Holders,
    ListFiles,
    ManifestReply,
    Ok,
    Publish,
    Published,
    Register,
    RequestChunk,
    Stats,
    StatsReply,
    Welcome,
    WhoHas,
)
from tests.state_backends import tracker_service
from tests.tracker_client_helper import TrackerTestClient, make_manifest, raw_frame
from tracker.config import TrackerConfig
from tracker.handlers import LIST_SLICE
from tracker.registry import Registry
from tracker.replies import encode_file_list, encode_holders, file_entry, holder_entry
from tracker.service import TrackerService
from tracker.store import Store

CONFIG = TrackerConfig(heartbeat_interval=10.0, peer_timeout=30.0, idle_timeout=60.0, max_connections=8)


@pytest.fixture
async def service(state: str | None) -> AsyncIterator[TrackerService]:
    """A tracker on each state backend (``tests/conftest.py``)."""
    async with tracker_service(CONFIG, state) as running:
        yield running


async def _stored(service: TrackerService) -> list[Manifest]:
    """The catalogue in the service's store (the store's methods block: SQLite, or Redis through the event loop)."""
    return await trio.to_thread.run_sync(lambda: list(service.store.load()))


class CountingStream(trio.abc.Stream):
    """Wraps a stream and counts ``send_all`` calls (to see replies batched)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sends = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sends += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()  # type: ignore[attr-defined]

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


def connect(
    service: TrackerService, nursery: trio.Nursery, host: str = "10.0.0.1", port: int = 40000, peer_id: bytes | None = None
) -> TrackerTestClient:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(service.handle_stream, server_stream, (host, port))
    return TrackerTestClient(client_stream, peer_id)


# -- the conversation ----------------------------------------------------------
async def test_hello_is_answered_with_what_the_tracker_sees(service: TrackerService, nursery: trio.Nursery) -> None:
    client = connect(service, nursery, "10.9.8.7", 51234)
    welcome = await client.hello(listen_port=6881)
    assert welcome == Welcome(service.tracker_id, 10.0, "10.9.8.7", 51234, PROTOCOL_VERSION, welcome.agent)
    assert welcome.agent.startswith("chunkswarm-tracker/")


async def test_hello_offering_capabilities_gets_the_agreement(service: TrackerService, nursery: trio.Nursery) -> None:
    # PROTOCOL.md §8: a capability the tracker does not speak is left out, not refused; with nothing
    # agreed, the WELCOME is the six fields of protocol 1, and the connection works as ever.
    client = connect(service, nursery)
    await client.send(Hello(client.peer_id, 6881, capabilities={"x-demo": 2}))
    frame = await client.stream.receive_some(65536)
    assert frame[3] == Opcode.WELCOME and frame[8] == 0x96  # a MessagePack array of 6 fields
    client.codec.receive_data(frame)
    welcome = client.codec.next_event()
    assert isinstance(welcome, Welcome) and welcome.capabilities == ()
    assert await client.request(Register(6881)) == Ok()


async def test_ipv4_mapped_and_ipv6_addresses(service: TrackerService, nursery: trio.Nursery) -> None:
    mapped = connect(service, nursery, "::ffff:192.0.2.5", 1)
    assert (await mapped.hello()).observed_host == "192.0.2.5"
    v6 = connect(service, nursery, "2001:db8:0:0::1", 2)
    await v6.register(7000)
    manifest = make_manifest()
    assert await v6.request(Publish(manifest)) == Published(manifest.file_id)
    assert await v6.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
    reply = await mapped.request(WhoHas(manifest.file_id))
    assert isinstance(reply, Holders) and [(h.host, h.port) for h in reply.holders] == [("2001:db8::1", 7000)]


async def test_publish_announce_and_find_holders(service: TrackerService, nursery: trio.Nursery) -> None:
    seeder = connect(service, nursery, "10.0.0.1")
    leecher = connect(service, nursery, "10.0.0.2")
    await seeder.register(6881)
    await leecher.register(6882)
    manifest = make_manifest("movie.mkv", chunks=12)
    assert await seeder.request(Publish(manifest)) == Published(manifest.file_id)
    assert await seeder.request(Announce(manifest.file_id, ((0, 12),))) == Ok()
    assert await leecher.request(Announce(manifest.file_id, ((3, 5),))) == Ok()

    assert await leecher.request(GetManifest(manifest.file_id)) == ManifestReply(manifest)
    reply = await leecher.request(WhoHas(manifest.file_id))
    assert reply == Holders(manifest.file_id, (Holder(seeder.peer_id, "10.0.0.1", 6881, b"\xff\xf0"),))
    reply = await seeder.request(WhoHas(manifest.file_id))
    assert reply == Holders(manifest.file_id, (Holder(leecher.peer_id, "10.0.0.2", 6882, b"\x18\x00"),))

    listing = await leecher.request(ListFiles("MOVIE"))
    assert isinstance(listing, FileList)
    [entry] = listing.entries
    assert (entry.name, entry.file_id, entry.size, entry.chunk_count) == ("movie.mkv", manifest.file_id, 12 * 1024, 12)
    assert (entry.holders, entry.complete_copies) == (2, 1)

    stats = await leecher.request(Stats())
    assert isinstance(stats, StatsReply)
    counters = stats.as_dict()
    assert (counters["peers"], counters["files"], counters["replicas"], counters["connections"]) == (2, 1, 2, 2)
    assert counters["requests"] == 12

    assert await seeder.request(Heartbeat()) == Ok()
    assert await seeder.request(Deregister()) == Ok()
    assert await leecher.request(WhoHas(manifest.file_id)) == Holders(manifest.file_id, ())
    assert await _stored(service) == [manifest]  # stored when PUBLISHED came back


async def test_a_client_that_never_registers_can_browse(service: TrackerService, nursery: trio.Nursery) -> None:
    seeder = connect(service, nursery)
    await seeder.register()
    manifest = make_manifest()
    await seeder.request(Publish(manifest))
    browser = connect(service, nursery)
    await browser.hello(listen_port=0)
    assert isinstance(await browser.request(ListFiles()), FileList)
    assert isinstance(await browser.request(WhoHas(manifest.file_id)), Holders)
    assert isinstance(await browser.request(Stats()), StatsReply)
    assert service.registry.peer_count == 1


async def test_pipelined_requests_are_answered_in_order_in_one_write(service: TrackerService, nursery: trio.Nursery,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The answer budget (5 ms, which a loaded machine can take for these 62 requests) would rightly split the write.
    monkeypatch.setattr(tracker.connection, "ANSWER_BUDGET", 10.0)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    counting = CountingStream(server_stream)
    nursery.start_soon(service.handle_stream, counting, ("10.0.0.1", 1))
    client = TrackerTestClient(client_stream)
    manifest = make_manifest(chunks=3)
    await client.send(Hello(client.peer_id), Register(6881), Publish(manifest), Announce(manifest.file_id, ((0, 1),)))
    replies = [await client.receive() for _ in range(4)]
    assert [type(r) for r in replies] == [Welcome, Ok, Published, Ok]
    sends = counting.sends
    batch = [Announce(manifest.file_id, ((i, i + 1),)) for i in range(1, 3)] + [WhoHas(manifest.file_id), Stats(), Heartbeat()] * 20
    await client.send(*batch)
    replies = [await client.receive() for _ in batch]
    assert [type(r) for r in replies] == [Ok, Ok] + [Holders, StatsReply, Ok] * 20
    assert counting.sends == sends + 1


async def test_holders_are_never_stale(service: TrackerService, nursery: trio.Nursery) -> None:
    seeder = connect(service, nursery, "10.0.0.1", peer_id=b"S" * 20)
    asker = connect(service, nursery, "10.0.0.2")
    await seeder.register(6881)
    await asker.hello()
    manifest = make_manifest(chunks=8)
    await seeder.request(Publish(manifest))

    async def seen() -> tuple[int, bytes]:
        reply = await asker.request(WhoHas(manifest.file_id))
        assert isinstance(reply, Holders)
        [holder] = reply.holders
        return holder.port, holder.bitfield

    await seeder.request(Announce(manifest.file_id, ((0, 1),)))
    assert await seen() == (6881, b"\x80")
    await seeder.request(Announce(manifest.file_id, ((7, 8),)))  # a newly verified chunk
    assert await seen() == (6881, b"\x81")
    assert await seeder.request(Register(7000)) == Ok()  # back on another port
    assert await seen() == (7000, b"\x81")


@pytest.mark.parametrize(
    "phase", [tracker.greeting.GREETING, tracker.handlers.REQUESTS, tracker.handlers.WITHDRAWING], ids=["greeting", "requests", "withdrawing"]
)
def test_each_handler_is_declared_where_it_can_run(phase: tracker.handlers.Handlers) -> None:
    # ``fast`` handlers may run on the hub's fast path, where nothing may wait: plain
    # functions. ``task`` ones run in the connection's own task: coroutine functions.
    assert not any(inspect.iscoroutinefunction(handler) for handler in phase.fast.values())
    assert all(inspect.iscoroutinefunction(handler) for handler in phase.task.values())
    assert not phase.fast.keys() & phase.task.keys()


# -- request-level errors: an ERROR reply, the connection stays ------------------
async def test_request_errors_leave_the_connection_open(service: TrackerService, nursery: trio.Nursery) -> None:
    client = connect(service, nursery, "10.0.0.1")
    await client.hello(listen_port=6881)
    manifest = make_manifest()
    for request in (Publish(manifest), Announce(manifest.file_id, ((0, 1),)), Heartbeat()):
        await client.expect_error(request, ErrorCode.NOT_REGISTERED)
    assert await client.request(Register(6881)) == Ok()
    for request in (Announce(manifest.file_id, ((0, 1),)), GetManifest(manifest.file_id), WhoHas(manifest.file_id)):
        await client.expect_error(request, ErrorCode.UNKNOWN_FILE)
    forged = attrs.evolve(make_manifest(chunks=300), file_id=bytes(32))  # large: checked in a worker thread
    error = await client.expect_error(Publish(forged), ErrorCode.INVALID_MANIFEST)
    assert "chunk hashes give" in error.message
    await client.expect_error(Publish(attrs.evolve(manifest, file_id=bytes(32))), ErrorCode.INVALID_MANIFEST)
    await client.request(Publish(manifest))
    await client.expect_error(Announce(manifest.file_id, ((0, 99),)), ErrorCode.BAD_REQUEST)
    assert service.registry.file_count == 1 and len(await _stored(service)) == 1
    assert isinstance(await client.request(Stats()), StatsReply)


async def test_a_peer_id_is_bound_to_its_host(service: TrackerService, nursery: trio.Nursery) -> None:
    first = connect(service, nursery, "10.0.0.1", peer_id=b"P" * 20)
    await first.register(6881)
    impostor = connect(service, nursery, "10.6.6.6", peer_id=b"P" * 20)
    await impostor.hello()
    await impostor.expect_error(Register(6881), ErrorCode.IDENTITY_CONFLICT)
    await impostor.expect_error(Heartbeat(), ErrorCode.NOT_REGISTERED)
    await impostor.expect_error(Deregister(), ErrorCode.IDENTITY_CONFLICT)
    assert service.registry.peer_count == 1


async def test_a_peer_continues_on_a_new_connection(service: TrackerService, nursery: trio.Nursery) -> None:
    manifest = make_manifest()
    first = connect(service, nursery, "10.0.0.1", peer_id=b"P" * 20)
    await first.register(6881)
    await first.request(Publish(manifest))
    await first.request(Announce(manifest.file_id, ((0, 4),)))
    await first.aclose()  # a dropped connection does not drop the peer
    again = connect(service, nursery, "10.0.0.1", 40001, peer_id=b"P" * 20)
    await again.hello(6881)
    assert await again.request(Heartbeat()) == Ok()
    assert await again.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
    assert service.registry.counts()["replicas"] == 1


# -- protocol violations: an ERROR frame, then the connection closes -------------
def _header(opcode: int, length: int) -> bytes:
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, opcode, length)


@pytest.mark.parametrize(
    ("hello_first", "data", "code", "reason"),
    [
        (False, Codec().send(Stats()), ErrorCode.BAD_REQUEST, "before HELLO"),
        (False, Codec().send(Publish(make_manifest())), ErrorCode.BAD_REQUEST, "PUBLISH before HELLO"),
        (False, Codec().send(ListFiles()), ErrorCode.BAD_REQUEST, "LIST_FILES before HELLO"),
        (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCode.BAD_REQUEST, "bad magic"),
        (False, _header(0x66, 0), ErrorCode.BAD_REQUEST, "unknown opcode"),
        (False, HEADER.pack(MAGIC, 9, Opcode.HELLO, 0), ErrorCode.UNSUPPORTED_VERSION, "version"),
        (False, _header(Opcode.PUBLISH, 2**31), ErrorCode.FRAME_TOO_LARGE, "limit"),
        (False, Codec().send(Hello(b"x" * 20, protocol_version=2)), ErrorCode.UNSUPPORTED_VERSION, "version"),
        (True, Codec().send(Hello(b"x" * 20)), ErrorCode.BAD_REQUEST, "HELLO sent twice"),
        (True, Codec().send(RequestChunk(bytes(32), 0)), ErrorCode.BAD_REQUEST, "not a tracker request"),
        (True, raw_frame(Opcode.WHO_HAS, [b"short"]), ErrorCode.BAD_REQUEST, "malformed WHO_HAS"),
        (True, _header(Opcode.STATS, 3) + b"\xc1\xc1\xc1", ErrorCode.BAD_REQUEST, "malformed STATS"),
        (True, raw_frame(Opcode.PUBLISH, ["../../etc/passwd", 1024, 1024, bytes(32), bytes(32)]), ErrorCode.BAD_REQUEST, "separator"),
        (True, raw_frame(Opcode.PUBLISH, ["a", 4096, 1024, bytes(32), bytes(64)]), ErrorCode.BAD_REQUEST, "needs 4 chunk hashes"),
    ],
)
async def test_protocol_violations_close_only_that_connection(
    service: TrackerService, nursery: trio.Nursery, hello_first: bool, data: bytes, code: ErrorCode, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    bystander = connect(service, nursery, "10.0.0.2")
    await bystander.register()
    offender = connect(service, nursery, "10.0.0.1")
    if hello_first:
        await offender.hello()
    with caplog.at_level(logging.WARNING, logger="tracker.connection"):
        await offender.send_raw(data)
        messages = await offender.closed_after()
    assert len(messages) == 1 and isinstance(messages[0], Error), messages
    assert messages[0].code == code and reason in messages[0].message
    assert any("closing 10.0.0.1:40000" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    assert await bystander.request(Heartbeat()) == Ok()
    assert service.connections == 1


async def test_replies_before_a_violation_are_still_sent(service: TrackerService, nursery: trio.Nursery) -> None:
    client = connect(service, nursery)
    await client.send_raw(Codec().send(Hello(client.peer_id)) + Codec().send(Stats()) + b"garbage!")
    messages = await client.closed_after()
    assert [type(m) for m in messages] == [Welcome, StatsReply, Error]


async def test_a_truncated_frame_at_eof_is_a_violation(service: TrackerService, nursery: trio.Nursery) -> None:
    client = connect(service, nursery)
    await client.hello()
    await client.send_raw(Codec().send(Stats())[:5])
    await client.stream.send_eof()  # type: ignore[attr-defined]
    messages = await client.closed_after()
    assert len(messages) == 1 and isinstance(messages[0], Error) and "truncated" in messages[0].message


async def test_a_clean_close_ends_the_connection_quietly(service: TrackerService, nursery: trio.Nursery) -> None:
    client = connect(service, nursery)
    await client.hello()
    await client.stream.send_eof()  # type: ignore[attr-defined]
    assert await client.closed_after() == []
    await trio.testing.wait_all_tasks_blocked()
    assert service.connections == 0


# -- limits and time -----------------------------------------------------------
async def test_connections_beyond_the_cap_get_an_error_frame(nursery: trio.Nursery) -> None:
    with Store(None) as store:
        service = TrackerService.create(attrs.evolve(CONFIG, max_connections=2), store)
        first, second = connect(service, nursery), connect(service, nursery)
        await first.hello()
        await second.hello()
        third = connect(service, nursery)
        messages = await third.closed_after()
        assert [(type(m), m.code) for m in messages] == [(Error, ErrorCode.TOO_MANY_CONNECTIONS)]  # type: ignore[union-attr]
        await first.aclose()
        await trio.testing.wait_all_tasks_blocked()
        fourth = connect(service, nursery)
        await fourth.hello()


async def test_an_idle_connection_is_closed(service: TrackerService, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    client = connect(service, nursery)
    await client.hello()
    start = trio.current_time()
    messages = await client.closed_after()
    assert [(type(m), m.code) for m in messages] == [(Error, ErrorCode.TIMEOUT)]  # type: ignore[union-attr]
    assert trio.current_time() - start == pytest.approx(CONFIG.idle_timeout)


async def test_a_trickle_of_bytes_does_not_keep_a_connection_open(
    service: TrackerService, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client = connect(service, nursery)
    await client.hello()
    frame = Codec().send(Stats())

    async def trickle() -> None:
        for byte in frame:
            await trio.sleep(CONFIG.idle_timeout / 4)
            await client.send_raw(bytes([byte]))

    nursery.start_soon(trickle)
    messages = await client.closed_after()
    assert [type(m) for m in messages] == [Error] and messages[0].code == ErrorCode.TIMEOUT  # type: ignore[union-attr]


async def test_silent_peers_expire_with_their_replicas(
    service: TrackerService, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.service")
    nursery.start_soon(service.expiry_loop)
    manifest = make_manifest()
    # Published directly: a PUBLISH waits for a worker thread, during which the
    # autojump clock would leap ahead and expire everyone.
    service.registry.publish(manifest)
    quiet = connect(service, nursery, "10.0.0.1", peer_id=b"Q" * 20)
    chatty = connect(service, nursery, "10.0.0.2", peer_id=b"C" * 20)
    for client in (quiet, chatty):
        await client.register()
        await client.request(Announce(manifest.file_id, ((0, 4),)))
    await quiet.aclose()  # gone without a goodbye: registered until silent for peer_timeout
    for _ in range(5):
        await trio.sleep(CONFIG.heartbeat_interval)
        assert await chatty.request(Heartbeat()) == Ok()
    assert service.registry.get_peer(b"Q" * 20) is None
    assert service.registry.get_peer(b"C" * 20) is not None
    assert service.registry.counts()["replicas"] == 1
    assert any("expired" in r.getMessage() and "5151515151" in r.getMessage() for r in caplog.records)


async def test_the_stats_line_is_logged_every_interval(
    service: TrackerService, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker.service")
    nursery.start_soon(service.stats_loop)
    await trio.sleep(CONFIG.stats_interval * 2.5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stats:")]
    assert len(lines) == 2 and "0 peers online, 0 files, 0 replicas, 0 connections" in lines[0]


async def test_a_storage_failure_is_an_internal_error_reply(nursery: trio.Nursery) -> None:
    store = Store(None)
    service = TrackerService.create(CONFIG, store)
    client = connect(service, nursery)
    await client.register()
    store.close()
    await client.expect_error(Publish(make_manifest()), ErrorCode.INTERNAL)
    assert service.registry.file_count == 0  # never listed what was not stored
    assert await client.request(Heartbeat()) == Ok()


# -- listings --------------------------------------------------------------------
def _publish_many(service: TrackerService, count: int) -> list[bytes]:
    """``count`` files published straight into the registry; their ids, newest first."""
    manifests = [make_manifest(f"file-{i:05d}.bin", chunks=1) for i in range(count)]
    for manifest in manifests:
        service.registry.publish(manifest, checked=True)
    return [m.file_id for m in reversed(manifests)]


class NamedSends(CountingStream):
    """Notes in a shared list which connection sent, in order."""

    def __init__(self, inner: trio.abc.Stream, name: str, sends: list[str]) -> None:
        super().__init__(inner)
        self.name = name
        self.log = sends

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.log.append(self.name)
        await super().send_all(data)


async def test_a_long_listing_is_whole_and_lets_other_connections_in(service: TrackerService, nursery: trio.Nursery) -> None:
    ids = _publish_many(service, 10 * LIST_SLICE + 7)
    sends: list[str] = []
    clients = {}
    for name in ("browser", "other"):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(service.handle_stream, NamedSends(server_stream, name, sends), ("10.0.0.1", 40000))
        clients[name] = TrackerTestClient(client_stream)
        await clients[name].hello()
    sends.clear()
    asked = service.requests
    await clients["browser"].send(ListFiles(limit=100_000))
    while service.requests == asked:  # until the listing has begun
        await trio.lowlevel.checkpoint()
    assert isinstance(await clients["other"].request(Stats()), StatsReply)  # answered while the listing is built
    listing = await clients["browser"].receive()
    assert sends == ["other", "browser"]
    assert isinstance(listing, FileList) and [e.file_id for e in listing.entries] == ids
    limited = await clients["browser"].request(ListFiles("FILE-0000", limit=5))
    assert isinstance(limited, FileList) and [e.name for e in limited.entries] == [f"file-0000{i}.bin" for i in range(9, 4, -1)]


async def test_a_listing_larger_than_a_frame_is_refused_and_the_connection_stays(
    service: TrackerService, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Filling a 16 MiB frame takes ~55,000 files of the longest names; instead the
    # frame's fixed part is made to take all but ~1,000 bytes, room for ~15 entries.
    monkeypatch.setattr(tracker.handlers, "FILE_LIST_OVERHEAD", CONFIG.max_frame_size - 1000)
    _publish_many(service, 40)
    client = connect(service, nursery)
    await client.hello()
    error = await client.expect_error(ListFiles(limit=40), ErrorCode.BAD_REQUEST)
    assert "ask for fewer" in error.message
    listing = await client.request(ListFiles(limit=5))
    assert isinstance(listing, FileList) and len(listing.entries) == 5


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300, 1 << 16])
def test_encode_file_list_matches_the_codec(count: int) -> None:
    registry = Registry(30.0, lambda: 0.0)
    for i in range(min(count, 20)):
        manifest = make_manifest(f"Ünïcode {i}.bin", chunks=1 + i)
        registry.publish(manifest)
        peer, _ = registry.register(i.to_bytes(20, "big"), "10.0.0.1", 1 + i)
        registry.announce(peer, manifest.file_id, ((0, 1),))
    summaries = registry.list_files()
    summaries = [summaries[i % len(summaries)] for i in range(count)]  # repeats: the frame's size is what matters
    expected = FileList(
        [FileEntry(m.file_id, m.name, m.size, m.chunk_size, m.chunk_count, s.holders, s.complete_copies) for s in summaries for m in (s.manifest,)]
    )
    frame = encode_file_list([file_entry(s) for s in summaries], max_frame_size=1 << 24)
    assert frame == Codec().send(expected)


# -- the hand-built HOLDERS frame ------------------------------------------------
@pytest.mark.parametrize("count", [0, 1, 15, 16, 300])
def test_encode_holders_matches_the_codec(count: int) -> None:
    registry = Registry(30.0, lambda: 0.0)
    manifest = make_manifest(chunks=20)
    registry.publish(manifest)
    for i in range(count):
        peer, _ = registry.register(i.to_bytes(20, "big"), "::1" if i % 2 else "10.0.0.1", 1 + i)
        registry.announce(peer, manifest.file_id, ((i % 20, 20),))
    _, replicas = registry.holders(manifest.file_id, limit=1000)
    expected = Holders(manifest.file_id, [Holder(r.peer.peer_id, r.peer.host, r.peer.port, r.bitfield()) for r in replicas])
    frame = encode_holders(manifest.file_id, [p for r in replicas for p in (r.peer.head, r.bits)], max_frame_size=1 << 20)
    assert frame == Codec().send(expected)
    assert all(holder_entry(r) == msgpack.packb(h.to_fields(), use_bin_type=True) for r, h in zip(replicas, expected.holders, strict=True))
    codec = Codec()
    codec.receive_data(frame)
    assert codec.next_event() == expected


def test_encode_holders_leaves_out_what_does_not_fit() -> None:
    registry = Registry(30.0, lambda: 0.0)
    manifest = make_manifest(chunks=8)
    registry.publish(manifest)
    for i in range(100):
        peer, _ = registry.register(i.to_bytes(20, "big"), "10.0.0.1", 1 + i)
        registry.announce(peer, manifest.file_id, ((0, 8),))
    _, replicas = registry.holders(manifest.file_id, limit=100)
    frame = encode_holders(manifest.file_id, [p for r in replicas for p in (r.peer.head, r.bits)], max_frame_size=1000)
    codec = Codec(max_frame_size=1000)
    codec.receive_data(frame)
    message = codec.next_event()
    assert isinstance(message, Holders) and 0 < len(message.holders) < 100
