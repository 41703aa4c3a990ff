"""The sans-I/O parts of the BitTorrent side: query strings, HTTP framing, UDP packets, connection ids, replies."""

from __future__ import annotations

import struct
from urllib.parse import quote_from_bytes

import bencode2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.bittorrent import udp_packets as udp
from tracker.bittorrent.connection_ids import ConnectionIds
from tracker.bittorrent.errors import BadHttpRequest, BtFailure
from tracker.bittorrent.http_framing import MAX_HEAD, MAX_LINE, RequestReader, response
from tracker.bittorrent.replies import announce_reply, failure_reply, scrape_reply
from tracker.bittorrent.requests import MAX_SCRAPE_HASHES, parse_announce, parse_scrape, percent_decode
from tracker.bittorrent.swarms import EVENT_COMPLETED, EVENT_STOPPED, Peers

HASH = bytes(range(20))
PEER = b"-LT2080-abcdefghijkl"


def query(**fields: object) -> bytes:
    return "&".join(f"{name}={value}" for name, value in fields.items()).encode()


def q(value: bytes) -> str:
    return quote_from_bytes(value, safe="")


# -- query strings -------------------------------------------------------------------
def test_an_announce_is_parsed() -> None:
    announce = parse_announce(query(info_hash=q(HASH), peer_id=q(PEER), port=6881, left=0, event="completed", numwant=10, compact=1, key="x"))
    assert (announce.info_hash, announce.peer_id, announce.port, announce.left) == (HASH, PEER, 6881, 0)
    assert (announce.event, announce.numwant, announce.compact, announce.ip) == (EVENT_COMPLETED, 10, True, None)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"peer_id": q(PEER), "port": 1}, "missing info_hash"),
        ({"info_hash": q(HASH), "port": 1}, "missing peer_id"),
        ({"info_hash": q(HASH), "peer_id": q(PEER)}, "missing port"),
        ({"info_hash": q(HASH[:19]), "peer_id": q(PEER), "port": 1}, "must be 20 bytes, got 19"),
        ({"info_hash": q(HASH + b"x"), "peer_id": q(PEER), "port": 1}, "must be 20 bytes, got 21"),
        ({"info_hash": q(HASH), "peer_id": q(PEER), "port": 70000}, "1..65535"),
        ({"info_hash": q(HASH), "peer_id": q(PEER), "port": "+5"}, "decimal"),
        ({"info_hash": q(HASH), "peer_id": q(PEER), "port": 1, "left": "-1"}, "decimal"),
        ({"info_hash": q(HASH), "peer_id": q(PEER), "port": 1, "event": "bogus"}, "event"),
        ({"info_hash": q(HASH), "peer_id": q(PEER), "port": 1, "numwant": "-5"}, "numwant"),
    ],
)
def test_bad_announces_say_why(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(BtFailure, match=reason):
        parse_announce(query(**fields))


def test_a_huge_numwant_is_kept_for_the_cap() -> None:
    announce = parse_announce(query(info_hash=q(HASH), peer_id=q(PEER), port=1, numwant="9" * 500))
    assert announce.numwant is not None and announce.numwant > 10**6


def test_a_claimed_ip_is_read_only_when_allowed() -> None:
    text = query(info_hash=q(HASH), peer_id=q(PEER), port=1, ip="203.0.113.9")
    assert parse_announce(text).ip is None
    assert parse_announce(text, allow_claimed_ip=True).ip == "203.0.113.9"
    with pytest.raises(BtFailure, match="ip must be"):
        parse_announce(query(info_hash=q(HASH), peer_id=q(PEER), port=1, ip="evil.example"), allow_claimed_ip=True)


def test_scrape_names_hashes_and_refuses_everything_at_once() -> None:
    assert parse_scrape(query(info_hash=q(HASH)) + b"&info_hash=" + q(b"z" * 20).encode()) == [HASH, b"z" * 20]
    with pytest.raises(BtFailure, match="name the info_hash"):
        parse_scrape(b"")
    with pytest.raises(BtFailure, match="at most"):
        parse_scrape(b"&".join([b"info_hash=" + q(HASH).encode()] * (MAX_SCRAPE_HASHES + 1)))


@given(st.binary(max_size=40))
def test_percent_decoding_round_trips(value: bytes) -> None:
    assert percent_decode(quote_from_bytes(value, safe="").encode()) == value
    for form in ("%%%02X", "%%%02x"):  # every byte escaped, either case: the fast path of 20-byte hashes
        assert percent_decode("".join(form % byte for byte in value).encode()) == value


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20), st.integers(1, 65535), st.integers(0, 2**63))
def test_announces_round_trip(info_hash: bytes, peer_id: bytes, port: int, left: int) -> None:
    announce = parse_announce(query(info_hash=q(info_hash), peer_id=q(peer_id), port=port, left=left))
    assert (announce.info_hash, announce.peer_id, announce.port, announce.left) == (info_hash, peer_id, port, left)


@given(st.binary(max_size=600))
def test_any_query_is_parsed_or_refused_with_a_reason(text: bytes) -> None:
    for parse in (parse_announce, parse_scrape):
        try:
            parse(text)
        except BtFailure as exc:
            assert str(exc)


# -- HTTP framing ----------------------------------------------------------------------
REQUEST = b"GET /announce?info_hash=abc&port=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: x\r\n\r\n"


@pytest.mark.parametrize("chunk", [len(REQUEST) * 3, 1, 7])
def test_pipelined_requests_whole_and_byte_by_byte(chunk: int) -> None:
    reader = RequestReader()
    data = REQUEST * 3
    got = []
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        while (request := reader.next_request()) is not None:
            got.append(request)
    assert [(r.path, r.query, r.keep_alive) for r in got] == [(b"/announce", b"info_hash=abc&port=1", True)] * 3


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [(b"GET / HTTP/1.0\r\n\r\n", False), (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True), (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", False)],
)
def test_keep_alive_follows_the_version_and_connection_header(head: bytes, keep_alive: bool) -> None:
    reader = RequestReader()
    reader.receive_data(head)
    request = reader.next_request()
    assert request is not None and request.keep_alive is keep_alive


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"POST /announce HTTP/1.1\r\n\r\n", 405),
        (b"GET /announce HTTP/2.0\r\n\r\n", 400),
        (b"GET announce HTTP/1.1\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400),
        (b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /" + b"a" * (MAX_LINE + 10), 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 65 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * MAX_HEAD + b"\r\n", 431),
    ],
)
def test_bad_requests_get_a_status_and_the_reader_refuses_for_good(data: bytes, status: int) -> None:
    reader = RequestReader()
    reader.receive_data(data)
    with pytest.raises(BadHttpRequest) as caught:
        reader.next_request()
    assert caught.value.status == status
    with pytest.raises(BadHttpRequest):
        reader.next_request()


def test_a_stream_that_ends_inside_a_request_is_refused() -> None:
    reader = RequestReader()
    reader.receive_data(b"GET /announce")
    assert reader.next_request() is None
    reader.receive_data(b"")
    with pytest.raises(BadHttpRequest, match="ended inside"):
        reader.next_request()


@given(st.binary(max_size=300))
def test_any_bytes_are_framed_or_refused(data: bytes) -> None:
    reader = RequestReader()
    reader.receive_data(data)
    reader.receive_data(b"")
    try:
        while reader.next_request() is not None:
            pass
    except BadHttpRequest as exc:
        assert 400 <= exc.status < 500


def test_response_framing() -> None:
    assert response(200, b"d1:xi1ee") == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nd1:xi1ee"
    assert b"Connection: close\r\n" in response(400, b"", close=True)


# -- replies ------------------------------------------------------------------------------
def test_replies_are_bencoded_as_clients_expect() -> None:
    peers = Peers(1, 2, 3, b"\x7f\x00\x00\x01\x1a\xe1", b"\x00" * 18)
    reply = bencode2.bdecode(announce_reply(peers, 1800, 900))
    assert reply == {b"complete": 1, b"incomplete": 2, b"downloaded": 3, b"interval": 1800, b"min interval": 900,
                     b"peers": b"\x7f\x00\x00\x01\x1a\xe1", b"peers6": b"\x00" * 18}  # fmt: skip
    listed = Peers(1, 0, 0, b"", b"", ((PEER, "10.0.0.1", 5),))
    assert bencode2.bdecode(announce_reply(listed, 1, 1, compact=False))[b"peers"] == [{b"ip": b"10.0.0.1", b"peer id": PEER, b"port": 5}]
    assert bencode2.bdecode(scrape_reply([(HASH, (1, 2, 3))])) == {b"files": {HASH: {b"complete": 1, b"downloaded": 2, b"incomplete": 3}}}
    assert bencode2.bdecode(failure_reply("no")) == {b"failure reason": b"no"}


# -- UDP packets and connection ids ----------------------------------------------------------
def announce_packet(connection_id: bytes = b"\x00" * 8, event: int = 0, numwant: int = -1, size: int = udp.ANNOUNCE_SIZE) -> bytes:
    packet = connection_id + struct.pack(">II20s20sQQQIIIiH", 1, 77, HASH, PEER, 0, 5, 0, event, 0, 0, numwant, 6881)
    return (packet + b"\x02\x05/abcd")[:size] if size > udp.ANNOUNCE_SIZE else packet[:size]


def test_udp_requests_are_parsed() -> None:
    assert udp.parse_packet(struct.pack(">QII", udp.PROTOCOL_ID, 0, 9)) == udp.ConnectRequest(9)
    request = udp.parse_packet(announce_packet(b"c" * 8, EVENT_STOPPED, 30, size=udp.ANNOUNCE_SIZE + 8))  # BEP 41 options ignored
    assert isinstance(request, udp.AnnounceRequest)
    assert (request.connection_id, request.transaction_id, request.info_hash, request.peer_id) == (b"c" * 8, 77, HASH, PEER)
    assert (request.left, request.event, request.numwant, request.port) == (5, EVENT_STOPPED, 30, 6881)
    scrape = udp.parse_packet(b"c" * 8 + struct.pack(">II", 2, 5) + HASH + b"z" * 20)
    assert scrape == udp.ScrapeRequest(b"c" * 8, 5, [HASH, b"z" * 20])


@pytest.mark.parametrize(
    "packet",
    [
        b"", b"\x00" * 15, struct.pack(">QII", 1234, 0, 9), announce_packet(size=97), b"c" * 8 + struct.pack(">II", 2, 5),
        b"c" * 8 + struct.pack(">II", 2, 5) + HASH[:10], b"c" * 8 + struct.pack(">II", 2, 5) + HASH * 75, b"c" * 8 + struct.pack(">II", 9, 5),
    ],
)  # fmt: skip
def test_malformed_datagrams_are_refused(packet: bytes) -> None:
    with pytest.raises(udp.BadPacket):
        udp.parse_packet(packet)


@given(st.binary(max_size=1600))
def test_any_datagram_is_parsed_or_refused(data: bytes) -> None:
    try:
        udp.parse_packet(data)
    except udp.BadPacket:
        pass


def test_connection_ids_are_bound_to_the_address_and_expire() -> None:
    now = [1000.0]
    ids = ConnectionIds(lambda: now[0], 60.0, key=b"k" * 32)
    cid = ids.issue("10.0.0.1", 5000)
    assert len(cid) == 8 and ids.valid(cid, "10.0.0.1", 5000)
    assert not ids.valid(cid, "10.0.0.2", 5000) and not ids.valid(cid, "10.0.0.1", 5001)
    assert not ConnectionIds(lambda: now[0], 60.0, key=b"j" * 32).valid(cid, "10.0.0.1", 5000)  # another tracker's secret
    now[0] += 60
    assert ids.valid(cid, "10.0.0.1", 5000)  # the previous minute's still counts
    now[0] += 60
    assert not ids.valid(cid, "10.0.0.1", 5000)
