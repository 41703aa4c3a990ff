"""The connection shell and the chunk server, over in-memory streams."""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from common.errors import ConnectionClosed, PeerTimeout
from common.framing import ErrorCode
from common.manifest import Manifest, build_manifest
from common.messages import CancelChunk, ChunkData, ChunkError, Error, Hello, RequestChunk, Welcome
from peer.connection import Connection
from peer.server import ChunkServer
from peer.storage.library import HeldFile, Library, open_published

CHUNK = 1024
PEER_ID = b"s" * 20


@pytest.fixture
def published(tmp_path: pathlib.Path) -> tuple[Library, Manifest, bytes]:
    path = tmp_path / "data.bin"
    data = os.urandom(40 * CHUNK + 10)
    path.write_bytes(data)
    manifest = build_manifest(path, CHUNK)
    st = os.stat(path)
    library = Library()
    library.add(open_published(path, manifest, (st.st_size, st.st_mtime_ns)))
    return library, manifest, data


async def handshake(conn: Connection) -> Welcome:
    await conn.send(Hello(b"c" * 20, listen_port=1234, agent="tester"))
    welcome = await conn.receive()
    assert isinstance(welcome, Welcome)
    return welcome


@asynccontextmanager
async def served(
    server: ChunkServer, pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]] = trio.testing.memory_stream_pair
) -> AsyncIterator[Connection]:
    """A client connection to ``server`` over an in-memory stream pair, after HELLO/WELCOME."""
    client_stream, server_stream = pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_stream)
        conn = Connection(client_stream)
        await handshake(conn)
        yield conn
        await conn.aclose()


def chunk_of(data: bytes, index: int) -> bytes:
    return data[index * CHUNK : (index + 1) * CHUNK]


async def expect_farewell(conn: Connection, code: ErrorCode) -> None:
    """An ERROR with ``code``, then the close."""
    farewell = await conn.receive()
    assert isinstance(farewell, Error) and farewell.code == code, farewell
    with pytest.raises(ConnectionClosed):
        await conn.receive()


async def test_connection_closed_and_timeout(autojump_clock: trio.abc.Clock) -> None:
    left, right = trio.testing.memory_stream_pair()
    conn = Connection(left)
    with pytest.raises(PeerTimeout):
        await conn.receive_within(5)
    await right.aclose()
    with pytest.raises(ConnectionClosed):
        await conn.receive()
    with pytest.raises(ConnectionClosed):
        await Connection(right).send(Hello(b"c" * 20))


async def test_pipelined_requests_and_errors(published: tuple[Library, Manifest, bytes]) -> None:
    library, manifest, data = published
    server = ChunkServer(library, PEER_ID, label="seed-1")
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_stream)
        conn = Connection(client_stream)
        welcome = await handshake(conn)
        assert welcome.agent == "seed-1" and welcome.peer_id == PEER_ID
        other = bytes(32)
        await conn.send_many([RequestChunk(manifest.file_id, 3), RequestChunk(manifest.file_id, 40), RequestChunk(other, 0),
                              RequestChunk(manifest.file_id, 41), RequestChunk(manifest.file_id, 0)])
        replies = [await conn.receive() for _ in range(5)]
        assert replies[0] == ChunkData(manifest.file_id, 3, chunk_of(data, 3))
        assert replies[1] == ChunkData(manifest.file_id, 40, data[40 * CHUNK :])
        assert isinstance(replies[2], ChunkError) and replies[2].code == ErrorCode.NOT_HELD
        assert isinstance(replies[3], ChunkError) and replies[3].code == ErrorCode.BAD_REQUEST
        assert replies[4] == ChunkData(manifest.file_id, 0, chunk_of(data, 0))
        assert sum(c.chunks for c in server.transfers.uploaded.values()) == 3
        assert list(server.transfers.uploaded) == ["tester (127.0.0.1:1234)"]
        await conn.aclose()


async def test_cancelled_request_gets_no_reply(published: tuple[Library, Manifest, bytes]) -> None:
    library, manifest, _data = published
    async with served(ChunkServer(library, PEER_ID), trio.testing.lockstep_stream_pair) as conn:
        fid = manifest.file_id
        await conn.send_many([RequestChunk(fid, 1), RequestChunk(fid, 2), RequestChunk(fid, 3), CancelChunk(fid, 2)])
        first = await conn.receive()
        second = await conn.receive()
        assert isinstance(first, ChunkData) and isinstance(second, ChunkData)
        assert (first.index, second.index) == (1, 3)
        await conn.send(RequestChunk(fid, 4))
        fourth = await conn.receive()
        assert isinstance(fourth, ChunkData) and fourth.index == 4


async def test_full_queue_answers_busy(published: tuple[Library, Manifest, bytes]) -> None:
    library, manifest, data = published
    async with served(ChunkServer(library, PEER_ID, max_queued=4), trio.testing.lockstep_stream_pair) as conn:
        await conn.send_many([RequestChunk(manifest.file_id, i) for i in range(20)])
        replies = [await conn.receive() for _ in range(20)]
        busy = [r.index for r in replies if isinstance(r, ChunkError) and r.code == ErrorCode.BUSY]
        answered = [r.index for r in replies if isinstance(r, ChunkData)]
        assert busy and answered and sorted(busy + answered) == list(range(20))
        assert all(r == ChunkData(manifest.file_id, r.index, chunk_of(data, r.index)) for r in replies if isinstance(r, ChunkData))


async def test_connection_cap_says_busy(published: tuple[Library, Manifest, bytes]) -> None:
    library, _manifest, _ = published
    server = ChunkServer(library, PEER_ID, max_connections=1)
    async with trio.open_nursery() as nursery:
        first_client, first_server = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, first_server)
        first = Connection(first_client)
        await handshake(first)
        second_client, second_server = trio.testing.memory_stream_pair()
        nursery.start_soon(server.handle_stream, second_server)
        second = Connection(second_client)
        await second.send(Hello(b"d" * 20))
        await expect_farewell(second, ErrorCode.BUSY)
        await first.aclose()


async def test_changed_file_is_no_longer_served(published: tuple[Library, Manifest, bytes]) -> None:
    library, manifest, _ = published
    held = library.get(manifest.file_id)
    assert held is not None
    async with served(ChunkServer(library, PEER_ID)) as conn:
        with open(held.path, "r+b") as handle:
            handle.write(b"edited")
        os.utime(held.path, ns=(1, 1))
        await conn.send(RequestChunk(manifest.file_id, 0))
        reply = await conn.receive()
        assert isinstance(reply, ChunkError) and reply.code == ErrorCode.NOT_HELD


async def test_garbage_gets_an_error_and_a_close(published: tuple[Library, Manifest, bytes]) -> None:
    library, _, _ = published
    async with served(ChunkServer(library, PEER_ID)) as conn:
        await conn.stream.send_all(b"XX" + bytes(30))
        await expect_farewell(conn, ErrorCode.BAD_REQUEST)


async def test_a_downloader_that_never_reads_is_dropped(
    published: tuple[Library, Manifest, bytes], autojump_clock: trio.abc.Clock
) -> None:
    # Requests for a file we do not hold are answered with CHUNK_ERRORs; a downloader
    # that takes none of them must not keep its upload slot (idle timeout 5 s).
    library, _, _ = published
    server = ChunkServer(library, PEER_ID, idle_timeout=5.0)
    async with served(server, trio.testing.lockstep_stream_pair) as conn:
        for index in range(3):
            await conn.send(RequestChunk(bytes(32), index))
        with trio.fail_after(30):
            while server.active:
                await trio.sleep(1)


async def test_requests_sent_before_a_half_close_are_all_answered(published: tuple[Library, Manifest, bytes]) -> None:
    library, manifest, data = published
    async with served(ChunkServer(library, PEER_ID)) as conn:
        await conn.send_many([RequestChunk(manifest.file_id, i) for i in range(4)])
        await conn.stream.send_eof()  # type: ignore[attr-defined]
        replies = [await conn.receive() for _ in range(4)]
        assert replies == [ChunkData(manifest.file_id, i, chunk_of(data, i)) for i in range(4)]
        with pytest.raises(ConnectionClosed):
            await conn.receive()


async def test_another_protocol_version_is_refused(published: tuple[Library, Manifest, bytes]) -> None:
    library, _, _ = published
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ChunkServer(library, PEER_ID).handle_stream, server_stream)
        conn = Connection(client_stream)
        await conn.send(Hello(b"c" * 20, protocol_version=2))
        await expect_farewell(conn, ErrorCode.UNSUPPORTED_VERSION)


async def test_an_idle_downloader_is_told_before_the_close(
    published: tuple[Library, Manifest, bytes], autojump_clock: trio.abc.Clock
) -> None:
    library, _, _ = published
    async with served(ChunkServer(library, PEER_ID, idle_timeout=5.0)) as conn:
        with trio.fail_after(30):
            await expect_farewell(conn, ErrorCode.TIMEOUT)


async def test_a_chunk_being_sent_comes_from_its_file_even_if_the_library_lets_go_of_it(tmp_path: pathlib.Path) -> None:
    # The library closes a file's descriptor when the file is removed (a failed
    # download) or published again; the number may then be reused for another file
    # while a 16 MiB chunk waits for a reader that is slow to take it.
    size = 16 * 1024 * 1024
    served_path, other_path = tmp_path / "served.bin", tmp_path / "other.bin"
    served_path.write_bytes(b"A" * size)
    other_path.write_bytes(b"S" * size)
    manifest = build_manifest(served_path, size)
    st = os.stat(served_path)
    library = Library()
    library.add(open_published(served_path, manifest, (st.st_size, st.st_mtime_ns)))
    server = ChunkServer(library, PEER_ID)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(server.serve, "127.0.0.1", 0)
            conn = Connection(await trio.open_tcp_stream(host, port))
            await handshake(conn)
            await conn.send(RequestChunk(manifest.file_id, 0))
            await trio.sleep(0.3)  # the sender fills the socket buffers and waits
            library.remove(manifest.file_id)
            other = os.open(other_path, os.O_RDONLY)  # likely the number just closed
            try:
                reply = await conn.receive()
            finally:
                os.close(other)
            assert isinstance(reply, ChunkData) and manifest.verify_chunk(0, reply.data) is None
            await conn.aclose()
            nursery.cancel_scope.cancel()


async def test_connections_that_do_not_say_hello_are_capped(published: tuple[Library, Manifest, bytes]) -> None:
    library, _, _ = published
    server = ChunkServer(library, PEER_ID, max_handshakes=2)
    async with trio.open_nursery() as nursery:
        clients = []
        for _ in range(3):
            client_stream, server_stream = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle_stream, server_stream)
            clients.append(Connection(client_stream))
            await trio.testing.wait_all_tasks_blocked()  # one after the other
        with trio.fail_after(1), pytest.raises(ConnectionClosed):  # the oldest silent one: closed, without a word
            await clients[0].receive()
        await handshake(clients[2])  # the newcomer is served
        await handshake(clients[1])
        nursery.cancel_scope.cancel()


class FaultyLibrary(Library):
    """A library whose lookup of one file id fails as a bug would."""

    broken = b"\xee" * 32

    def get(self, file_id: bytes) -> HeldFile | None:
        if file_id == self.broken:
            raise RuntimeError("lookup failed")
        return super().get(file_id)


async def test_an_unexpected_error_ends_only_its_own_connection(
    published: tuple[Library, Manifest, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    library, manifest, data = published
    server = ChunkServer(FaultyLibrary(library.files), PEER_ID)
    async with served(server) as unlucky, served(server) as other:
        with caplog.at_level(logging.ERROR, logger="peer.server"):
            await unlucky.send(RequestChunk(FaultyLibrary.broken, 0))
            await expect_farewell(unlucky, ErrorCode.INTERNAL)
        await other.send(RequestChunk(manifest.file_id, 1))
        assert await other.receive() == ChunkData(manifest.file_id, 1, chunk_of(data, 1))
    (record,) = [r for r in caplog.records if r.exc_info]
    assert "internal error" in record.getMessage() and "lookup failed" in str(record.exc_info[1])  # type: ignore[index]


async def test_an_upload_rate_paces_the_chunks_over_all_connections(published: tuple[Library, Manifest, bytes]) -> None:
    # The real clock: chunks are read from the file in worker threads, which an autojump clock would jump over.
    library, manifest, data = published
    server = ChunkServer(library, PEER_ID, upload_rate=20 * CHUNK)  # a chunk every 50 ms
    arrived: list[float] = []

    async def fetch(conn: Connection, indexes: range) -> None:
        await conn.send_many([RequestChunk(manifest.file_id, i) for i in indexes])
        for i in indexes:
            reply = await conn.receive()
            assert isinstance(reply, ChunkData) and bytes(reply.data) == chunk_of(data, i)
            arrived.append(trio.current_time())

    start = trio.current_time()
    async with served(server) as one, served(server) as two, trio.open_nursery() as nursery:
        nursery.start_soon(fetch, one, range(0, 3))
        nursery.start_soon(fetch, two, range(3, 6))
    # Six chunks from two connections share one budget, a chunk every 50 ms: the sixth cannot leave before 250 ms.
    # (Only this lower bound: how much later it comes depends on the machine.)
    assert len(arrived) == 6 and max(arrived) - start >= 5 * 0.05
