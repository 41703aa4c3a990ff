"""peer/tls_stream.py's pipelined paths: a chunk encrypted in a worker thread while the one before it is sent (``more``)."""

from __future__ import annotations

import os
import pathlib
import ssl
from typing import Any

import pytest
import trio
import trio.testing

from common.errors import StorageError
from common.manifest import build_manifest
from common.messages import ChunkData
from peer.connection import Connection
from peer.server import ChunkServer, _RequestQueue
from peer.storage.library import Library, open_published
from peer.tls_fill import AHEAD, Fill
from peer.tls_stream import RAW_RECEIVE_SIZE, TLSStream
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


# -- receiving: fill_into, the decryption in a worker thread while the event loop receives ---------------


class Tamper(Counting):
    """A transport that, once ``flip`` is set, flips one bit in the middle of the next send."""

    flip = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.flip:
            self.flip = False
            data = bytearray(data)
            data[len(data) // 2] ^= 1
        await super().send_all(data)


async def fill(stream: TLSStream, size: int) -> tuple[bytes, list[int]]:
    buffer = bytearray(size)
    calls: list[int] = []
    n = await stream.fill_into(buffer, calls.append)
    assert calls == [n]
    return bytes(buffer[:n]), calls


async def trickle(stream: trio.abc.Stream, data: bytes, step: int) -> None:
    for start in range(0, len(data), step):
        await stream.send_all(data[start : start + step])
        await trio.sleep(0)


@pytest.mark.parametrize("transports", [socket_pair, trio.testing.memory_stream_pair])
async def test_fill_waits_for_the_whole_buffer_and_keeps_the_rest(transports: Any) -> None:
    server, client = await tls_pair(transports())
    data = os.urandom(5 * 2**20 + 333)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, data)  # 320 full records, sent as they fit
        got = [(await fill(client, 2**20))[0] for _ in range(5)]
        assert b"".join(got) == data[: 5 * 2**20]
        assert await receive_exactly(client, 333) == data[5 * 2**20 :]


async def test_fill_from_small_records_arriving_in_small_pieces() -> None:
    """Records of 1,000 bytes whose ciphertext arrives 700 bytes at a time: every record is split between two receives."""
    a, b = trio.testing.memory_stream_pair()
    server, client = await tls_pair((a, b))
    records = [os.urandom(1000) for _ in range(300)]
    ciphertext = bytearray()
    for record in records:  # encrypted here, sent below by a slow transport
        server._ssl.write(record)
        ciphertext += server._outgoing.read()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, a, bytes(ciphertext), 700)
        got, _ = await fill(client, 300_000)
    assert got == b"".join(records)


async def test_fill_stops_at_close_notify_with_what_came() -> None:
    server, client = await tls_pair(socket_pair())
    await server.send_all(b"x" * 100_000)
    await server.aclose()
    got, _ = await fill(client, 2**20)
    assert got == b"x" * 100_000
    assert await client.receive_some(10) == b""


async def test_fill_over_a_truncated_record_is_broken_and_says_what_came() -> None:
    a, b = socket_pair()
    server, client = await tls_pair((a, b))
    await server.send_all(b"y" * 50_000)
    server._ssl.write(os.urandom(10_000))
    cut = server._outgoing.read()
    await a.send_all(cut[: len(cut) // 2])  # half a record, then the transport ends without close_notify
    await a.aclose()
    written: list[int] = []
    buffer = bytearray(2**20)
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.fill_into(buffer, written.append)
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    assert written == [50_000] and bytes(buffer[:50_000]) == b"y" * 50_000
    with pytest.raises(trio.BrokenResourceError):
        await client.fill_into(bytearray(10), written.append)


async def test_fill_over_a_corrupted_record_is_broken() -> None:
    a, b = socket_pair()
    tamper = Tamper(a)
    server, client = await tls_pair((tamper, b))
    tamper.flip = True
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, os.urandom(3 * 2**20))
        with pytest.raises(trio.BrokenResourceError) as caught:
            await fill(client, 3 * 2**20)
        assert "BAD_RECORD_MAC" in str(caught.value.__cause__).upper() or isinstance(caught.value.__cause__, ssl.SSLError)
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some(10)


async def test_a_fill_cancelled_part_way_keeps_what_it_decrypted() -> None:
    """A download's answer deadline cancels a receive mid-body: the bytes decrypted so far are the caller's, the rest follows."""
    a, b = trio.testing.memory_stream_pair()
    server, client = await tls_pair((a, b))
    data = os.urandom(2**20)
    await server.send_all(data[:300_000])
    first = bytearray(1)
    assert await client.receive_into(first) == 1  # the ciphertext that has come is in the BIO now
    buffer = bytearray(2**20 - 1)
    written: list[int] = []
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.fill_into, buffer, written.append)
            await trio.testing.wait_all_tasks_blocked()  # it has decrypted what was there and waits for more
            scope.cancel()
    assert len(written) == 1 and 0 < written[0] < 300_000
    await server.send_all(data[300_000:])
    rest = bytearray(len(buffer) - written[0])
    assert await client.fill_into(rest, written.append) == len(rest)
    assert bytes(first) + bytes(buffer[: written[0]]) + bytes(rest) == data


async def test_the_feeder_stays_at_most_ahead_of_the_worker() -> None:
    server, client = await tls_pair(socket_pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, os.urandom(6 * 2**20))
        await fill(client, 2**20)
        assert client._incoming.pending < AHEAD + RAW_RECEIVE_SIZE  # the rest waits in the kernel
        for _ in range(5):
            await fill(client, 2**20)


async def test_the_feeder_waits_once_the_worker_is_behind() -> None:
    """Fill.feed alone (no worker catching up): it stops receiving with AHEAD bytes of ciphertext waiting, not at the end of the data."""
    _server, client = await tls_pair(trio.testing.memory_stream_pair())
    step, calls = 64 * 1024, 0

    async def refill() -> bool:
        nonlocal calls
        calls += 1
        client._incoming.write(bytes(step))
        await trio.sleep(0)
        return calls < 1000

    fill = Fill(memoryview(bytearray(10)), 0, client._ssl, client._incoming, client._lock, refill, client._break)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fill.feed)
        await trio.testing.wait_all_tasks_blocked()
        assert AHEAD <= client._incoming.pending < AHEAD + step
        nursery.cancel_scope.cancel()


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


async def test_a_fill_waiting_for_the_network_holds_none_of_the_shared_threads() -> None:
    """File reads and hashing share trio's default thread limiter; a fill waiting on a slow source uses the stream's own."""
    server, client = await tls_pair(trio.testing.memory_stream_pair())
    await server.send_all(os.urandom(100_000))
    shared = trio.to_thread.current_default_thread_limiter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.fill_into, bytearray(2**20), lambda n: None)
        await trio.testing.wait_all_tasks_blocked()  # its worker has decrypted what came and waits for more
        assert client._fill_limiter.borrowed_tokens == 1 and shared.borrowed_tokens == 0
        nursery.cancel_scope.cancel()
