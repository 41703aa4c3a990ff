"""peer/tls_stream.py: TLS 1.3 over memory streams and socket pairs, against itself and against trio.SSLStream."""

from __future__ import annotations

import os
import pathlib
import ssl

import pytest
import trio
import trio.testing

from common.errors import ConnectionClosed, StorageError
from common.framing import ErrorCode
from common.identity import NodeKey
from common.messages import ChunkData, ChunkError
from common.tls import client_context, server_context
from peer.connection import Connection
from peer.tls_stream import RAW_RECEIVE_SIZE, TLSStream

SERVER = server_context(NodeKey.generate())
CLIENT = client_context()


def socket_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


async def tls_pair(transports: tuple[trio.abc.Stream, trio.abc.Stream]) -> tuple[TLSStream, TLSStream]:
    """A server and a client TLSStream over the two ends, handshake done."""
    server = TLSStream(transports[0], SERVER, server_side=True)
    client = TLSStream(transports[1], CLIENT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.do_handshake)
    return server, client


async def receive_all_into(stream: TLSStream, size: int) -> tuple[bytes, int]:
    """Everything up to the end of stream, read with receive_into ``size`` bytes at a time; and the number of calls."""
    buffer = bytearray(size)
    parts, calls = [], 0
    while n := await stream.receive_into(buffer):
        parts.append(bytes(buffer[:n]))
        calls += 1
    return b"".join(parts), calls


@pytest.mark.parametrize("into", [True, False])
async def test_large_transfer_over_sockets(into: bool) -> None:
    server, client = await tls_pair(socket_pair())
    assert client.version() == "TLSv1.3"
    assert client.getpeercert(binary_form=True)  # the server's certificate, for the proof of membership
    data = os.urandom(6 * 2**20 + 12345)
    received = b""

    async def receive() -> None:
        nonlocal received
        if into:
            received, _ = await receive_all_into(client, 2**20)
        else:
            parts = []
            while part := await client.receive_some(3 * 2**20):
                parts.append(part)
            received = b"".join(parts)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        view = memoryview(data)
        for start in range(0, len(data), 2**20):  # a header and a chunk per write, as the chunk server sends
            await server.send_parts((view[start : start + 7], view[start + 7 : start + 2**20]))
        await server.aclose()
    assert received == data


async def test_many_small_records_come_out_in_one_call() -> None:
    """1,000 records of 100 bytes, all arrived: one receive_into returns them all (trio.SSLStream gives one record per call)."""
    server, client = await tls_pair(trio.testing.memory_stream_pair())
    messages = [bytes([i % 251]) * 100 for i in range(1000)]
    for message in messages:
        await server.send_all(message)  # one record each
    buffer = bytearray(2**20)
    assert await client.receive_into(buffer) == 100_000
    assert bytes(buffer[:100_000]) == b"".join(messages)
    for message in messages[:300]:
        await server.send_all(message)
    assert await client.receive_some(2**20) == b"".join(messages[:300])


async def test_receive_into_stops_at_the_buffer_and_keeps_the_rest() -> None:
    server, client = await tls_pair(trio.testing.memory_stream_pair())
    data = os.urandom(50_000)
    await server.send_all(data)
    buffer = bytearray(20_001)
    assert await client.receive_into(buffer) == 20_001
    assert bytes(buffer) == data[:20_001]
    assert await client.receive_some(100_000) == data[20_001:]


async def test_close_notify_is_end_of_stream_for_good() -> None:
    server, client = await tls_pair(socket_pair())
    await server.send_all(b"last words")
    await server.aclose()
    assert await client.receive_some(100) == b"last words"
    assert await client.receive_some(100) == b""
    assert await client.receive_into(bytearray(10)) == 0
    assert await client.receive_some(100) == b""


async def test_end_of_stream_without_close_notify_is_broken() -> None:
    """A transport that ends without close_notify (a truncation) is not a clean end of stream."""
    server_transport, client_transport = socket_pair()
    server, client = await tls_pair((server_transport, client_transport))
    await server.send_all(b"complete record")
    await server_transport.aclose()  # under TLS: no close_notify
    assert await client.receive_some(100) == b"complete record"
    with pytest.raises(trio.BrokenResourceError) as caught:
        await client.receive_some(100)
    assert isinstance(caught.value.__cause__, ssl.SSLError)
    with pytest.raises(trio.BrokenResourceError):  # and it stays broken
        await client.receive_into(bytearray(10))


class CutOff(trio.abc.Stream):
    """A transport whose next send, once ``cut`` is set, delivers half its bytes and then ends the stream."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.cut = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.cut:
            await self.inner.send_all(memoryview(data)[: len(data) // 2])
            await self.inner.aclose()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("into", [True, False])
async def test_peer_that_closes_mid_record(into: bool) -> None:
    a, b = socket_pair()
    cut = CutOff(a)
    server, client = await tls_pair((cut, b))
    await server.send_all(b"whole")
    cut.cut = True
    await server.send_all(os.urandom(10_000))  # one record, half of it sent
    assert await client.receive_some(5) == b"whole"
    with pytest.raises(trio.BrokenResourceError) as caught:
        if into:
            await client.receive_into(bytearray(20_000))
        else:
            await client.receive_some(20_000)
    assert isinstance(caught.value.__cause__, ssl.SSLError)


async def test_a_peer_that_does_not_speak_tls() -> None:
    """A client meeting a plain chunkswarm server, and a server meeting a plain client: BrokenResourceError from the SSLError."""
    plain, theirs = socket_pair()
    client = TLSStream(theirs, CLIENT)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(plain.send_all, b"CHSW\x00\x01 not a TLS record at all" * 10)
        with pytest.raises(trio.BrokenResourceError) as caught:
            await client.do_handshake()
    assert isinstance(caught.value.__cause__, ssl.SSLError)

    plain, theirs = socket_pair()
    server = TLSStream(theirs, SERVER, server_side=True)
    await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
    with pytest.raises(trio.BrokenResourceError) as caught:
        await server.receive_some(100)  # the handshake first, implicitly
    assert isinstance(caught.value.__cause__, ssl.SSLError)


async def test_transport_closed_during_the_handshake() -> None:
    plain, theirs = socket_pair()
    client = TLSStream(theirs, CLIENT)
    await plain.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await client.do_handshake()


@pytest.mark.parametrize("tls_side", ["server", "client"])
async def test_interoperates_with_trio_sslstream(tls_side: str) -> None:
    """The tracker still runs trio.SSLStream: both directions, and each side's close, read as a clean end."""
    a, b = socket_pair()
    ours: TLSStream
    theirs: trio.SSLStream[trio.abc.Stream]
    if tls_side == "server":
        ours, theirs = TLSStream(a, SERVER, server_side=True), trio.SSLStream(b, CLIENT)
    else:
        ours, theirs = TLSStream(a, CLIENT), trio.SSLStream(b, SERVER, server_side=True)
    data = os.urandom(300_000)
    got: list[bytes] = []

    async def theirs_side() -> None:
        parts = []
        while len(b"".join(parts)) < len(data):
            parts.append(await theirs.receive_some(100_000))
        got.append(b"".join(parts))
        await theirs.send_all(data[::-1])
        await theirs.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(theirs_side)
        await ours.send_all(data)  # handshake implied
        back, _ = await receive_all_into(ours, 65536)
    assert got == [data]
    assert back == data[::-1]
    await ours.aclose()


async def test_full_duplex() -> None:
    """One task sends while another receives, on both streams at once (an echo of more than the sockets buffer)."""
    server, client = await tls_pair(socket_pair())
    data = os.urandom(3 * RAW_RECEIVE_SIZE)

    async def echo() -> None:
        buffer = bytearray(100_000)
        while n := await server.receive_into(buffer):
            await server.send_all(buffer[:n])
        await server.aclose()

    back = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo)
        nursery.start_soon(client.send_all, data + data)
        buffer = bytearray(65536)
        while len(back) < 2 * len(data):
            n = await client.receive_into(buffer)
            assert n
            back += buffer[:n]
        await client.aclose()
    assert back == data + data


async def test_two_receivers_or_two_senders_are_busy() -> None:
    server, _client = await tls_pair(socket_pair())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.receive_some, 10)  # the client sends nothing: it waits
        nursery.start_soon(server.send_all, bytes(8 * 2**20))  # the client reads nothing: it waits
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_into(bytearray(10))
        with pytest.raises(trio.BusyResourceError):
            await server.send_all(b"x")
        nursery.cancel_scope.cancel()


async def test_closed_stream_refuses_use() -> None:
    server, client = await tls_pair(trio.testing.memory_stream_pair())
    await client.aclose()
    await client.aclose()  # twice is fine
    with pytest.raises(trio.ClosedResourceError):
        await client.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await client.send_all(b"x")
    assert await server.receive_some(10) == b""  # close_notify was sent
    with pytest.raises(ValueError):
        await server.receive_into(bytearray())


async def test_connection_sends_and_receives_chunks_over_tls(tmp_path: pathlib.Path) -> None:
    """Connection's TLS paths: chunks read and encrypted in a worker thread, bodies decrypted into the codec's buffer."""
    data = os.urandom(3 * 2**20 + 1000)
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    server, client = await tls_pair(socket_pair())
    sender, receiver = Connection(server), Connection(client)
    file_id = bytes(range(32))
    pieces = [(0, 2**20), (2**20, 2**20), (3 * 2**20, 1000), (2 * 2**20, 2**20)]  # a large body, then a short one, then large
    fd = os.open(path, os.O_RDONLY)
    try:
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for index, (offset, length) in enumerate(pieces):
                    await sender.send_file_range(sender.codec.chunk_data_prefix(file_id, index, length), fd, offset, length)
                await sender.send(ChunkError(file_id, 9, ErrorCode.NOT_HELD, "not held"))

            nursery.start_soon(send)
            for index, (offset, length) in enumerate(pieces):
                message = await receiver.receive()
                assert isinstance(message, ChunkData)
                assert (message.index, bytes(message.data)) == (index, data[offset : offset + length])
            assert isinstance(await receiver.receive(), ChunkError)
        assert receiver.received > len(data)  # what a download watches to tell a slow source from a silent one
        with pytest.raises(StorageError):  # a file shorter than the chunk: said before anything is encrypted
            await sender.send_file_range(sender.codec.chunk_data_prefix(file_id, 0, 100), fd, len(data) - 10, 100)
    finally:
        os.close(fd)
    await sender.aclose()
    with pytest.raises(ConnectionClosed):
        await receiver.receive()
