"""The download engine over memory streams, under a mock clock: sessions, the stall timer, timeouts, retries, refresh pacing.

The holders are reached through the downloader's ``connect`` seam (a memory
stream to a real :meth:`ChunkServer.handle_stream`, to a peer that never
answers, or a refusal), and the tracker is a stand-in with the two requests a
download makes. Timed rules are checked on trio's clock: minutes of timeouts
take a fraction of a second.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import pathlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import attrs
import pytest
import trio
import trio.testing

from common.chunkset import ChunkSet
from common.errors import ConnectionClosed, NoHolders, PeerTimeout, TaskErrors
from common.manifest import Manifest, build_manifest
from common.messages import Hello, Holder, Holders, Message, Ok, RequestChunk, Welcome, WhoHas
from peer.config import PeerConfig
from peer.connection import Connection
from peer.download import Downloader
from peer.progress import DownloadResult
from peer.server import ChunkServer
from peer.session import Session
from peer.status import Transfers
from peer.storage.chunk_io import Buffer
from peer.storage.library import HeldFile, Library
from tests.clocks import thread_aware_clock

CHUNK = 1024
CHUNKS = 32
M = TypeVar("M")
Address = tuple[str, int]
Handler = Callable[[trio.abc.Stream], Awaitable[None]]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> trio.testing.MockClock:
    # Chunks are hashed and written in worker threads (see tests/clocks.py).
    return thread_aware_clock(monkeypatch)


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "src" / "data.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(CHUNKS * CHUNK - 100))
    return path


@pytest.fixture
def manifest(source: pathlib.Path) -> Manifest:
    return build_manifest(source, CHUNK)


@attrs.define(eq=False)
class MemoryTracker:
    """WHO_HAS answered with ``holders`` (the times it was asked kept in ``who_has_at``), ANNOUNCE with OK."""

    holders: list[Holder] = attrs.field(factory=list)
    who_has_at: list[float] = attrs.field(factory=list)
    connected: bool = True

    async def request(self, message: Message, expect: type[M]) -> M:
        await trio.lowlevel.checkpoint()
        reply: Message = Ok()
        if isinstance(message, WhoHas):
            self.who_has_at.append(trio.current_time())
            reply = Holders(message.file_id, tuple(self.holders))
        assert isinstance(reply, expect)
        return reply


@attrs.define(eq=False)
class Network:
    """What the downloader's ``connect`` reaches: a handler per address, run on a memory stream; None refuses."""

    nursery: trio.Nursery
    handlers: dict[Address, Handler | None] = attrs.field(factory=dict)
    #: When each address was dialled.
    attempts: dict[Address, list[float]] = attrs.field(factory=dict)

    async def connect(self, address: Address) -> trio.abc.Stream:
        self.attempts.setdefault(address, []).append(trio.current_time())
        await trio.lowlevel.checkpoint()
        handler = self.handlers[address]
        if handler is None:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(handler, server)
        return client


def address(number: int) -> Address:
    return f"10.0.0.{number}", 7000


def holder(number: int, chunks: ChunkSet) -> Holder:
    return Holder(bytes([number]) * 20, *address(number), chunks.bitfield())


def serving_server(source: pathlib.Path, manifest: Manifest, label: str, indexes: range | None = None) -> ChunkServer:
    """A chunk server holding ``indexes`` of ``manifest`` (all of them by default)."""
    library = Library()
    held = ChunkSet.full(manifest.chunk_count) if indexes is None else ChunkSet.from_indexes(manifest.chunk_count, indexes)
    library.add(HeldFile(manifest, source, os.open(source, os.O_RDONLY), held))
    return ChunkServer(library, b"s" * 20, label=label)


def serving(source: pathlib.Path, manifest: Manifest, indexes: range, label: str) -> Handler:
    """A chunk server holding ``indexes`` of ``manifest``."""
    return serving_server(source, manifest, label, indexes).handle_stream


@attrs.define(eq=False)
class SilentPeer:
    """Says WELCOME and takes every request, answering none; notes when requests came and when we hung up."""

    requests_at: list[float] = attrs.field(factory=list)
    closed_at: list[float] = attrs.field(factory=list)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        conn = Connection(stream)
        await conn.receive()
        await conn.send(Welcome(b"z" * 20, agent="silent"))
        try:
            while True:
                if isinstance(await conn.receive(), RequestChunk):
                    self.requests_at.append(trio.current_time())
        except ConnectionClosed:
            self.closed_at.append(trio.current_time())


@attrs.define(eq=False)
class ChunkTimes:
    """A progress sink that notes when each chunk was verified."""

    at: list[float] = attrs.field(factory=list)

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        pass

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self.at.append(trio.current_time())

    def peers(self, count: int) -> None:
        pass

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        pass

    def finished(self) -> None:
        pass


@attrs.define(eq=False)
class Harness:
    tmp_path: pathlib.Path
    manifest: Manifest
    tracker: MemoryTracker
    network: Network
    library: Library = attrs.field(factory=Library)

    async def download(self, progress: ChunkTimes | None = None, **settings: object) -> DownloadResult:
        config = PeerConfig(state_dir=self.tmp_path / "state", label="getter", chunk_size=CHUNK, **settings)  # type: ignore[arg-type]
        downloader = Downloader(config, self.manifest, self.tmp_path / "out", self.tracker, self.library, Transfers(),
                                Hello(b"g" * 20, agent="getter"), b"g" * 20, progress=progress, connect=self.network.connect)
        with trio.fail_after(300):  # virtual seconds: a download that never ends fails here
            return await downloader.run()


@pytest.fixture
def harness(tmp_path: pathlib.Path, manifest: Manifest, nursery: trio.Nursery) -> Iterator[Harness]:
    harness = Harness(tmp_path, manifest, MemoryTracker(), Network(nursery))
    yield harness
    harness.library.close()


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_a_download_over_memory_streams_takes_each_half_from_its_holder(
    clock: trio.testing.MockClock, harness: Harness, source: pathlib.Path, manifest: Manifest
) -> None:
    half = CHUNKS // 2
    for number, indexes in ((1, range(half)), (2, range(half, CHUNKS))):
        harness.tracker.holders.append(holder(number, ChunkSet.from_indexes(CHUNKS, indexes)))
        harness.network.handlers[address(number)] = serving(source, manifest, indexes, f"seed-{number}")
    result = await harness.download()
    assert result.path.read_bytes() == source.read_bytes()
    assert {name: count.chunks for name, count in result.received.items()} == {"seed-1 (10.0.0.1:7000)": half, "seed-2 (10.0.0.2:7000)": half}


async def test_a_session_that_ends_with_several_errors_is_dropped_and_says_them_all(
    clock: trio.testing.MockClock, harness: Harness, source: pathlib.Path, manifest: Manifest,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    # Its requester and its receiver can fail at once (one broken connection seen by both).
    run = Session.run

    async def both_fail_at_the_first_holder(session: Session) -> None:
        if session.address == address(1):
            raise TaskErrors.of([ConnectionClosed("connection lost"), PeerTimeout("took no request within 10 s")])
        await run(session)

    monkeypatch.setattr(Session, "run", both_fail_at_the_first_holder)
    every = range(CHUNKS)
    for number in (1, 2):
        harness.tracker.holders.append(holder(number, ChunkSet.full(CHUNKS)))
        harness.network.handlers[address(number)] = serving(source, manifest, every, f"seed-{number}")
    with caplog.at_level(logging.INFO, logger="peer.download"):
        result = await harness.download()
    assert list(result.received) == ["seed-2 (10.0.0.2:7000)"]
    assert any(r.getMessage().endswith("dropping 10.0.0.1:7000: connection lost; took no request within 10 s") for r in caplog.records)


async def test_chunks_no_holder_has_end_the_download_after_stall_timeout(
    clock: trio.testing.MockClock, harness: Harness, source: pathlib.Path, manifest: Manifest
) -> None:
    half = range(CHUNKS // 2)
    harness.tracker.holders.append(holder(1, ChunkSet.from_indexes(CHUNKS, half)))
    harness.network.handlers[address(1)] = serving(source, manifest, half, "seed")
    progress = ChunkTimes()
    with pytest.raises(NoHolders) as info:
        await harness.download(progress, stall_timeout=5.0, refresh_interval=0.5)
    waited = trio.current_time() - max(progress.at)
    assert len(progress.at) == len(half) and info.value.missing == tuple(range(CHUNKS // 2, CHUNKS))
    # The stall timer starts at the first refresh that finds nothing in flight, at most a refresh later.
    assert 5.0 <= waited <= 5.0 + 2 * (0.5 + 0.1)


async def test_a_holder_that_never_answers_is_dropped_after_first_answer_timeout(
    clock: trio.testing.MockClock, harness: Harness, source: pathlib.Path, manifest: Manifest
) -> None:
    silent = SilentPeer()
    every = ChunkSet.full(CHUNKS)
    harness.tracker.holders += [holder(1, every), holder(2, every)]
    harness.network.handlers[address(1)] = silent.handle_stream
    harness.network.handlers[address(2)] = serving(source, manifest, range(CHUNKS), "honest")
    # endgame_copies=1: the chunks asked of the silent peer are asked of no one else until it is dropped.
    # A holder that has answered nothing yet has first_answer_timeout, not request_timeout.
    result = await harness.download(request_timeout=10.0, first_answer_timeout=3.0, endgame_copies=1, stall_timeout=30.0)
    assert result.path.read_bytes() == source.read_bytes()
    assert list(result.received) == ["honest (10.0.0.2:7000)"]
    assert silent.requests_at and silent.closed_at
    assert 3.0 <= silent.closed_at[0] - silent.requests_at[0] <= 3.1
    assert result.seconds >= 3.0  # its chunks came only once it was dropped


async def test_a_failing_holder_is_retried_after_a_delay_that_doubles(clock: trio.testing.MockClock, harness: Harness) -> None:
    harness.tracker.holders.append(holder(1, ChunkSet.full(CHUNKS)))
    harness.network.handlers[address(1)] = None  # a closed port: not tried every peer_retry_delay
    with pytest.raises(NoHolders):
        await harness.download(peer_retry_delay=2.0, max_retry_delay=16.0, refresh_interval=0.5, stall_timeout=60.0)
    attempts = harness.network.attempts[address(1)]
    assert len(attempts) >= 6
    # Retried once the delay is over, at the next refresh (every refresh_interval plus the minimum gap).
    expected = [min(16.0, 2.0 * 2**i) for i in range(len(attempts) - 1)]
    assert all(delay <= gap <= delay + 0.5 + 0.1 + 1e-6 for gap, delay in zip(gaps(attempts), expected, strict=True)), gaps(attempts)


async def test_refreshes_keep_the_minimum_gap_while_holders_keep_failing(clock: trio.testing.MockClock, harness: Harness) -> None:
    for number in (1, 2, 3):
        harness.tracker.holders.append(holder(number, ChunkSet.full(CHUNKS)))
        harness.network.handlers[address(number)] = None
    # Each failed session asks for a refresh at once, and each refresh retries them all.
    with pytest.raises(NoHolders):
        await harness.download(peer_retry_delay=0.001, max_retry_delay=0.001, refresh_interval=0.5, stall_timeout=3.0)
    refreshes = harness.tracker.who_has_at
    assert min(gaps(refreshes)) >= 0.1 - 1e-9, gaps(refreshes)
    assert len(refreshes) >= 20  # the failures drive the refreshes, not refresh_interval



def slow_link(handler: Handler, seconds_per_chunk: float) -> Handler:
    """``handler`` behind a link that carries a chunk every ``seconds_per_chunk`` towards the downloader.

    As a socket's buffers do, it takes all the server sends at once: the server
    has sent its queued chunks long before they arrive, and a cancel comes too
    late for all of them.
    """

    async def behind_the_link(downloader_side: trio.abc.Stream) -> None:
        to_server_send, to_server_receive = trio.testing.memory_stream_one_way_pair()
        sent, delivered = trio.testing.MemorySendStream(), trio.testing.MemoryReceiveStream()
        pumped = trio.StapledStream(to_server_send, delivered)  # the downloader's ends, pumped below

        async def pump(source: trio.abc.ReceiveStream, sink: trio.abc.SendStream) -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while data := await source.receive_some():
                    await sink.send_all(data)

        async def carry() -> None:
            while data := await sent.get_data(CHUNK):
                await trio.sleep(len(data) / CHUNK * seconds_per_chunk)
                delivered.put_data(data)
            delivered.put_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(carry)
            nursery.start_soon(pump, downloader_side, pumped)
            nursery.start_soon(pump, pumped, downloader_side)
            await handler(trio.StapledStream(sent, to_server_receive))
            nursery.cancel_scope.cancel()

    return behind_the_link


@pytest.mark.parametrize("slow", [0.05, 0.1, 0.2], ids=["twice as slow", "four times as slow", "eight times as slow"])
async def test_the_endgame_sends_few_chunks_twice_and_takes_the_slow_holders_last_chunks(
    clock: trio.testing.MockClock, harness: Harness, source: pathlib.Path, manifest: Manifest, slow: float
) -> None:
    # Issue 16: every source that ran out of chunks to ask for duplicated a whole pipeline of requests
    # outstanding elsewhere, and most of them were sent twice (cancels came too late).
    servers = [serving_server(source, manifest, "fast"), serving_server(source, manifest, "slow")]
    for number, (server, pace) in enumerate(zip(servers, (0.025, slow), strict=True), 1):
        harness.tracker.holders.append(holder(number, ChunkSet.full(CHUNKS)))
        harness.network.handlers[address(number)] = slow_link(server.handle_stream, pace)
    result = await harness.download(pipeline_depth=8)
    assert result.path.read_bytes() == source.read_bytes()
    sent = [sum(count.chunks for count in server.transfers.uploaded.values()) for server in servers]
    assert sum(sent) <= CHUNKS + 8, sent  # the old rule: 46-47 (whole pipelines duplicated)
    # The fast holder took the slow one's last chunks rather than wait for them.
    assert sent[1] - 8 < CHUNKS * 0.025 / (0.025 + slow), sent


async def test_a_chunk_asked_twice_is_cancelled_at_the_other_peer_as_its_first_copy_arrives(
    clock: trio.testing.MockClock, harness: Harness, source: pathlib.Path, manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 16: the cancel went out only once the first copy was hashed and written, which on a
    # busy downloader is long enough for the other server to send its copy too. Here checks take
    # a second: the slow holder (a chunk every 0.2 s, its requests queued) must not serve a chunk
    # the fast one has delivered.
    verify = Downloader._verify

    async def slow_check(self: Downloader, session: Session, index: int, data: Buffer) -> None:
        await trio.sleep(1.0)
        await verify(self, session, index, data)

    monkeypatch.setattr(Downloader, "_verify", slow_check)
    servers = [serving_server(source, manifest, "fast"), serving_server(source, manifest, "slow")]
    servers[1].upload_rate = CHUNK / 0.2
    for number, server in enumerate(servers, 1):
        harness.tracker.holders.append(holder(number, ChunkSet.full(CHUNKS)))
        harness.network.handlers[address(number)] = server.handle_stream
    result = await harness.download(pipeline_depth=8, io_threads=16)  # checks for every chunk at once: none waits for a slot
    assert result.path.read_bytes() == source.read_bytes()
    sent = [sum(count.chunks for count in server.transfers.uploaded.values()) for server in servers]
    assert sum(sent) <= CHUNKS + 1, sent  # one chunk the slow holder was already sending may cross its cancel
