"""The BitTorrent shells over real sockets: HTTP (both I/O paths) and UDP, bad clients beside a good one."""

from __future__ import annotations

import os
import socket
import struct
from urllib.parse import quote_from_bytes

import attrs
import bencode2
import pytest
import trio
import trio.testing

from common.capabilities import BITTORRENT
from common.messages import Hello, ListTorrents, TorrentList
from peer.catalogue import open_catalogue
from peer.config import PeerConfig
from peer.tracker_client import open_query_link
from tracker.bittorrent import udp_packets as udp
from tracker.bittorrent.front import BtFront
from tracker.bittorrent.http import HttpAnnounceServer
from tracker.bittorrent.settings import BitTorrentConfig
from tracker.config import IO_PATHS, IoPath, TrackerConfig
from tracker.service import RunningTracker, serve_tracker

HASH = bytes(range(20))


def q(value: bytes) -> str:
    return quote_from_bytes(value, safe="")


def announce_request(peer: int, port: int = 6881, info_hash: bytes = HASH, extra: str = "") -> bytes:
    peer_id = b"-TEST00-%012d" % peer
    return f"GET /announce?info_hash={q(info_hash)}&peer_id={q(peer_id)}&port={port}&left=1&compact=1{extra} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def read_response(stream: trio.abc.Stream, buffer: bytearray) -> tuple[int, bytes, bool]:
    """One response from ``stream``: status, body and whether it says Connection: close."""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(65536)
            assert data, "the connection closed"
            buffer += data
        end = buffer.index(b"\r\n\r\n")
        head = bytes(buffer[:end]).decode()
        length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")))
        while len(buffer) < end + 4 + length:
            buffer += await stream.receive_some(65536)
        body = bytes(buffer[end + 4 : end + 4 + length])
        del buffer[: end + 4 + length]
        return int(head.split()[1]), body, "connection: close" in head.lower()


async def closed(stream: trio.abc.Stream) -> bool:
    with trio.fail_after(10):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
    return True


@pytest.fixture(params=IO_PATHS)
def io(request: pytest.FixtureRequest) -> IoPath:
    return request.param  # type: ignore[no-any-return]


async def start(nursery: trio.Nursery, io: IoPath, **settings: object) -> RunningTracker:
    bittorrent = BitTorrentConfig(http=("127.0.0.1", 0), udp=("127.0.0.1", 0), **settings)  # type: ignore[arg-type]
    running: RunningTracker = await nursery.start(serve_tracker, TrackerConfig(port=0, io=io, bittorrent=bittorrent))
    return running


async def test_bad_requests_never_disturb_a_good_client(nursery: trio.Nursery, io: IoPath) -> None:
    running = await start(nursery, io, max_peers_per_ip_per_torrent=0, max_numwant=200)
    assert running.bittorrent.http is not None
    port = running.bittorrent.http[1]
    good = await trio.open_tcp_stream("127.0.0.1", port)
    good_buffer = bytearray()

    async def good_client_is_served(peer: int) -> dict[bytes, object]:
        await good.send_all(announce_request(peer, extra="&numwant=1000000000000000000000000000000"))
        status, body, close = await read_response(good, good_buffer)
        assert status == 200 and not close
        reply = bencode2.bdecode(body)
        assert b"failure reason" not in reply, reply
        return reply  # type: ignore[no-any-return]

    for peer in range(250):  # more than the numwant cap
        await good_client_is_served(peer)
    reply = await good_client_is_served(0)
    assert len(reply[b"peers"]) == 200 * 6  # type: ignore[arg-type]  # a huge numwant is capped

    refused = [  # well framed, refused with a reason; the connection serves on
        (b"GET /announce?peer_id=x&port=1 HTTP/1.1\r\n\r\n", b"missing info_hash"),
        (b"GET /announce?info_hash=" + q(HASH[:5]).encode() + b"&peer_id=x&port=1 HTTP/1.1\r\n\r\n", b"info_hash must be 20 bytes, got 5"),
        (announce_request(1000, port=0), b"port must be"),
        (b"GET /scrape HTTP/1.1\r\n\r\n", b"name the info_hash"),
    ]
    for request, reason in refused:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = bytearray()
        await stream.send_all(request)
        status, body, close = await read_response(stream, buffer)
        assert status == 200 and reason in bencode2.bdecode(body)[b"failure reason"] and not close
        await stream.send_all(announce_request(1001))  # still served
        assert (await read_response(stream, buffer))[0] == 200
        await stream.aclose()
        await good_client_is_served(1)

    broken = [  # cannot be framed: a status, a reason, the connection closed
        (b"GET /announce?" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(200) + b"\r\n\r\n", 400),
        (b"DELETE /announce HTTP/1.1\r\n\r\n", 405),
        (b"GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n", 404),
    ]
    for request, expected in broken:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = bytearray()
        await stream.send_all(request)
        status, body, close = await read_response(stream, buffer)
        assert status == expected and close and bencode2.bdecode(body)[b"failure reason"]
        assert await closed(stream)
        await good_client_is_served(2)
    await good.aclose()


async def test_pipelined_requests_are_answered_in_order(nursery: trio.Nursery, io: IoPath) -> None:
    running = await start(nursery, io)
    assert running.bittorrent.http is not None
    stream = await trio.open_tcp_stream("127.0.0.1", running.bittorrent.http[1])
    scrape = f"GET /scrape?info_hash={q(HASH)} HTTP/1.1\r\n\r\n".encode()
    await stream.send_all(announce_request(1) + scrape + announce_request(2) + scrape)
    buffer = bytearray()
    replies = [bencode2.bdecode((await read_response(stream, buffer))[1]) for _ in range(4)]
    assert replies[1][b"files"][HASH][b"incomplete"] == 1 and replies[3][b"files"][HASH][b"incomplete"] == 2
    assert replies[2][b"peers"] == b"\x7f\x00\x00\x01" + (6881).to_bytes(2, "big")
    stats = running.stats()
    assert stats["bittorrent_torrents"] == 1 and stats["bittorrent_peers"] == 2


async def test_connections_per_address_are_capped(nursery: trio.Nursery, io: IoPath) -> None:
    running = await start(nursery, io, max_connections_per_ip=2)
    assert running.bittorrent.http is not None
    port = running.bittorrent.http[1]
    streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    for stream in streams:  # served, so counted
        await stream.send_all(announce_request(1))
        assert (await read_response(stream, bytearray()))[0] == 200
    third = await trio.open_tcp_stream("127.0.0.1", port)
    status, _, close = await read_response(third, bytearray())
    assert status == 503 and close
    await streams[0].aclose()
    await trio.sleep(0.2)
    fourth = await trio.open_tcp_stream("127.0.0.1", port)
    await fourth.send_all(announce_request(1))
    assert (await read_response(fourth, bytearray()))[0] == 200


async def test_an_idle_connection_is_closed(autojump_clock: trio.testing.MockClock) -> None:
    front = BtFront.create(BitTorrentConfig(idle_timeout=30.0), trio.current_time)
    server = HttpAnnounceServer(front, lambda host: True)
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle_stream, server_side, "10.0.0.1", 5000)
        await client.send_all(announce_request(1))
        assert (await read_response(client, bytearray()))[0] == 200
        await trio.sleep(29)
        await client.send_all(announce_request(1))  # not idle yet
        assert (await read_response(client, bytearray()))[0] == 200
        start = trio.current_time()
        assert await client.receive_some(10) == b""
        assert trio.current_time() - start == pytest.approx(30.0)
    assert server.connections == 0


# -- UDP ------------------------------------------------------------------------------------
class UdpClient:
    def __init__(self, sock: trio.socket.SocketType, address: tuple[str, int]) -> None:
        self.sock, self.address = sock, address

    async def ask(self, packet: bytes, wait: float = 5.0) -> bytes | None:
        await self.sock.sendto(packet, self.address)
        with trio.move_on_after(wait):
            return (await self.sock.recvfrom(4096))[0]
        return None

    async def connect(self) -> bytes:
        reply = await self.ask(struct.pack(">QII", udp.PROTOCOL_ID, 0, 42))
        assert reply is not None and reply[:8] == struct.pack(">II", 0, 42)
        return reply[8:16]

    def announce(self, connection_id: bytes, peer: bytes, port: int, event: int = 0, transaction: int = 7) -> bytes:
        return connection_id + struct.pack(">II20s20sQQQIIIiH", 1, transaction, HASH, peer, 0, 10, 0, event, 0, 0, -1, port)


async def test_udp_good_client_served_while_garbage_is_dropped(nursery: trio.Nursery) -> None:
    running = await start(nursery, "epoll")
    assert running.bittorrent.udp is not None
    good = UdpClient(trio.socket.socket(type=trio.socket.SOCK_DGRAM), running.bittorrent.udp)
    bad = UdpClient(trio.socket.socket(type=trio.socket.SOCK_DGRAM), running.bittorrent.udp)
    await good.sock.bind(("127.0.0.1", 0))
    await bad.sock.bind(("127.0.0.1", 0))
    cid = await good.connect()
    reply = await good.ask(good.announce(cid, b"g" * 20, 7000))
    assert reply is not None and struct.unpack(">IIIII", reply[:20]) == (1, 7, 1800, 1, 0) and reply[20:] == b""

    garbage = [b"", b"x", os.urandom(15), os.urandom(200), struct.pack(">QII", 1234, 0, 1)]
    never_issued = [bad.announce(os.urandom(8), b"b" * 20, 7001), cid + struct.pack(">II", 2, 3) + HASH]  # the good client's id, from another port
    for packet in garbage + never_issued:
        assert await bad.ask(packet, wait=0.3) is None
        reply = await good.ask(good.announce(cid, b"g" * 20, 7000, transaction=8))
        assert reply is not None and reply[:8] == struct.pack(">II", 1, 8)
    assert running.service.bittorrent.swarms.scrape(HASH) == (0, 0, 1)  # the bad announces were never counted

    bad_cid = await bad.connect()
    reply = await bad.ask(bad.announce(bad_cid, b"b" * 20, 7001))
    assert reply is not None and reply[20:] == b"\x7f\x00\x00\x01" + (7000).to_bytes(2, "big")  # the good client, observed address
    reply = await bad.ask(bad.announce(bad_cid, b"b" * 20, 7001, event=9))
    assert reply is not None and reply[:4] == struct.pack(">I", udp.ACTION_ERROR) and b"unknown event" in reply
    reply = await bad.ask(bad_cid + struct.pack(">II", 2, 3) + HASH)
    assert reply is not None and struct.unpack(">IIIII", reply) == (2, 3, 0, 0, 2)
    good.sock.close()
    bad.sock.close()


def test_settings_refuse_what_would_break_clients() -> None:
    with pytest.raises(ValueError, match="peer_timeout"):
        BitTorrentConfig(interval=1800, peer_timeout=1800)
    with pytest.raises(ValueError, match="min_interval"):
        BitTorrentConfig(interval=60, min_interval=120)
    assert not BitTorrentConfig().enabled and attrs.evolve(BitTorrentConfig(), udp=("::", 1)).enabled


async def test_an_idle_socket_is_closed_on_both_io_paths(nursery: trio.Nursery, io: IoPath) -> None:
    running = await start(nursery, io, idle_timeout=1.0)
    assert running.bittorrent.http is not None
    stream = await trio.open_tcp_stream("127.0.0.1", running.bittorrent.http[1])
    await stream.send_all(announce_request(1))
    assert (await read_response(stream, bytearray()))[0] == 200
    assert await closed(stream)  # within a few seconds, not never


# -- the native side: ls and stats (PROTOCOL.md §8.12) ------------------------------------------
async def test_ls_lists_the_bittorrent_swarms_only_to_clients_that_agreed(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    running = await start(nursery, "epoll")
    assert running.bittorrent.http is not None
    stream = await trio.open_tcp_stream("127.0.0.1", running.bittorrent.http[1])
    other = bytes(range(100, 120))
    for request in (announce_request(1), announce_request(2, info_hash=other), announce_request(3, info_hash=other)):
        await stream.send_all(request)
        assert (await read_response(stream, bytearray()))[0] == 200
    config = PeerConfig(tracker=(running.host, running.port))
    async with open_catalogue(config) as catalogue:
        torrents = await catalogue.torrents()
        assert torrents is not None
        assert [(e.info_hash, e.seeders, e.leechers, e.completed) for e in torrents.entries] == [(other, 0, 2, 0), (HASH, 0, 1, 0)]
        assert torrents.more == 0
        one = await catalogue.torrents(limit=1)
        assert one is not None and [e.info_hash for e in one.entries] == [other] and one.more == 1
        counters = await catalogue.stats()
        assert counters["bittorrent_torrents"] == 2 and counters["bittorrent_peers"] == 3
    # A client that did not agree on bittorrent never gets a TORRENT_LIST: asking is a violation.
    with pytest.raises(BaseException) as caught:  # the tracker closes: an error or a group of them
        async with open_query_link((running.host, running.port), Hello(b"q" * 20, 0), timeout=5) as link:
            assert not link.speaks(BITTORRENT)
            await link.request(ListTorrents(10), TorrentList, timeout=5)
    assert not isinstance(caught.value, (AssertionError, trio.Cancelled))
    assert "LIST_TORRENTS needs the capability bittorrent, which this connection did not agree on" in caplog.text


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def _free_on_both() -> int:
    while True:
        with socket.socket(socket.AF_INET6) as v6:
            v6.bind(("::1", 0))
            port = int(v6.getsockname()[1])
            with socket.socket() as v4:
                try:
                    v4.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_peers_are_handed_out_in_peers6(nursery: trio.Nursery) -> None:
    bittorrent = BitTorrentConfig(http=("*", _free_on_both()))  # with port 0 each family would get a port of its own
    running: RunningTracker = await nursery.start(serve_tracker, TrackerConfig(port=0, bittorrent=bittorrent))
    assert running.bittorrent.http is not None
    port = running.bittorrent.http[1]
    v6 = await trio.open_tcp_stream("::1", port)
    await v6.send_all(announce_request(1, port=7001))
    status, body, _ = await read_response(v6, bytearray())
    assert status == 200 and bencode2.bdecode(body)[b"peers"] == b""
    v4 = await trio.open_tcp_stream("127.0.0.1", port)
    await v4.send_all(announce_request(2, port=7002))
    reply = bencode2.bdecode((await read_response(v4, bytearray()))[1])
    assert reply[b"peers6"] == socket.inet_pton(socket.AF_INET6, "::1") + (7001).to_bytes(2, "big") and reply[b"peers"] == b""
    await v6.send_all(announce_request(1, port=7001))
    reply = bencode2.bdecode((await read_response(v6, bytearray()))[1])
    assert reply[b"peers"] == b"\x7f\x00\x00\x01" + (7002).to_bytes(2, "big") and b"peers6" not in reply


async def test_a_long_pipeline_is_answered_whole_a_turn_at_a_time(nursery: trio.Nursery, io: IoPath) -> None:
    running = await start(nursery, io, max_peers_per_ip_per_torrent=0)
    assert running.bittorrent.http is not None
    port = running.bittorrent.http[1]
    flood = await trio.open_tcp_stream("127.0.0.1", port)
    count = 3000  # ~700 KB of requests: several turns of MAX_TURN
    async with trio.open_nursery() as inner:
        inner.start_soon(flood.send_all, b"".join(announce_request(i, port=1000 + i % 60000) for i in range(count)))
        buffer = bytearray()
        for _ in range(count):
            assert (await read_response(flood, buffer))[0] == 200
    other = await trio.open_tcp_stream("127.0.0.1", port)
    await other.send_all(announce_request(99999))
    assert (await read_response(other, bytearray()))[0] == 200
    assert running.service.bittorrent.swarms.scrape(HASH)[2] == count + 1
