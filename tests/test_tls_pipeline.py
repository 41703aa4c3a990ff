"""peer/tls_stream.py's pipelined sending: a chunk encrypted in a worker thread while the one before it is sent (``more``)."""

from __future__ import annotations

import os
import pathlib

import pytest
import trio
import trio.testing

from common.errors import StorageError
from common.manifest import build_manifest
from common.messages import ChunkData
from peer.connection import Connection
from peer.server import ChunkServer, _RequestQueue
from peer.storage.library import Library, open_published
from tests.test_tls_stream import socket_pair, tls_pair


class Counting(trio.abc.Stream):
    """A transport that counts the bytes sent through it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    with trio.fail_after(60):  # a guard against a hang, not a timing
        while len(data) < size:
            part = await stream.receive_some(size - len(data))
            assert part, "end of stream"
            data += part
    return bytes(data)


async def test_more_holds_a_chunk_back_until_the_next_send_or_flush() -> None:
    a, b = trio.testing.memory_stream_pair()
    counting = Counting(a)
    server, client = await tls_pair((counting, b))
    chunks = [os.urandom(300_000) for _ in range(3)]
    before = counting.sent
    await server.send_from_thread(lambda: (b"h0", chunks[0]), more=True)
    assert counting.sent == before  # held back: the caller said another send follows
    await server.send_from_thread(lambda: (b"h1", chunks[1]), more=True)  # chunk 0 goes out while chunk 1 is encrypted
    assert await receive_exactly(client, 300_002) == b"h0" + chunks[0]
    held = counting.sent
    await server.send_all(b"control")  # any other send sends what was held first: the order is the order made
    assert counting.sent > held
    assert await receive_exactly(client, 300_009) == b"h1" + chunks[1] + b"control"
    await server.send_from_thread(lambda: (b"h2", chunks[2]), more=True)
    await server.flush()
    assert await receive_exactly(client, 300_002) == b"h2" + chunks[2]
    await server.send_from_thread(lambda: (b"h3", chunks[0]), more=True)
    await server.aclose()  # close_notify after what was held
    assert await receive_exactly(client, 300_002) == b"h3" + chunks[0]
    assert await client.receive_some(10) == b""


async def test_a_failed_read_still_sends_the_chunk_before_it() -> None:
    server, client = await tls_pair(trio.testing.memory_stream_pair())
    chunk = os.urandom(200_000)
    await server.send_from_thread(lambda: (b"h", chunk), more=True)

    def short_file() -> tuple[bytes, bytes]:
        raise StorageError("file shorter than expected")

    with pytest.raises(StorageError):
        await server.send_from_thread(short_file, more=True)
    assert await receive_exactly(client, 200_001) == b"h" + chunk
    await server.send_all(b"still usable")  # nothing of the failed chunk was encrypted
    assert await receive_exactly(client, 12) == b"still usable"


async def test_cancelled_while_the_chunk_before_goes_out_breaks_the_stream() -> None:
    """The client reads nothing: the held chunk cannot all be sent, and a cancel leaves ciphertext lost, so the stream is broken."""
    server, _client = await tls_pair(socket_pair())
    chunk = bytes(8 * 2**20)  # more than the socket buffers hold
    await server.send_from_thread(lambda: (b"h", chunk), more=True)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_from_thread, lambda: (b"h", chunk))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await server.flush()


async def test_the_other_side_closing_during_a_pipelined_send_is_a_clear_error() -> None:
    a, b = socket_pair()
    server, client = await tls_pair((a, b))
    chunk = os.urandom(4 * 2**20)  # more than the socket buffers hold
    await server.send_from_thread(lambda: (b"h", chunk), more=True)
    await client.aclose()
    with pytest.raises(trio.BrokenResourceError) as caught:
        await server.send_from_thread(lambda: (b"h", chunk), more=True)
    assert isinstance(caught.value.__cause__, OSError)  # EPIPE or ECONNRESET, said as the cause
    with pytest.raises(trio.BrokenResourceError):
        await server.flush()


async def test_the_chunk_server_sends_a_held_chunk_once_its_queue_empties(tmp_path: pathlib.Path) -> None:
    """A chunk sent with ``more`` (its successor was queued) goes out when the successor is cancelled before its turn."""
    chunk = 256 * 1024
    path = tmp_path / "data.bin"
    data = os.urandom(3 * chunk)
    path.write_bytes(data)
    manifest = build_manifest(path, chunk)
    library = Library()
    library.add(open_published(path, manifest, (os.stat(path).st_size, os.stat(path).st_mtime_ns)))
    server_tls, client_tls = await tls_pair(trio.testing.memory_stream_pair())
    conn, downloader = Connection(server_tls), Connection(client_tls)
    queue = _RequestQueue()
    queue.put((manifest.file_id, 0))
    queue.put((manifest.file_id, 1))
    async with trio.open_nursery() as nursery:
        async with conn._send_lock:  # the sender takes chunk 0, sees chunk 1 queued (more), and waits here
            nursery.start_soon(ChunkServer(library, b"s" * 20)._sender, conn, queue, "tester")
            await trio.testing.wait_all_tasks_blocked()
            queue.discard((manifest.file_id, 1))  # a CANCEL
        with trio.fail_after(60):  # a guard against a hang, not a timing
            message = await downloader.receive()
        assert isinstance(message, ChunkData) and (message.index, bytes(message.data)) == (0, data[:chunk])
        nursery.cancel_scope.cancel()
