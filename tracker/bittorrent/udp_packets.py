"""BEP 15 datagrams: connect, announce, scrape and their answers, and error; sans-I/O.

:func:`parse_packet` turns a datagram into a request or raises
:class:`BadPacket`: the shell drops such a datagram without a word (an answer
to garbage from a possibly spoofed address would make the tracker a
reflector). Every request carries the client's transaction id, echoed in the
answer. Integers are big-endian.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from tracker.bittorrent.requests import MAX_SCRAPE_HASHES

__all__ = [
    "PROTOCOL_ID", "ConnectRequest", "AnnounceRequest", "ScrapeRequest", "BadPacket", "parse_packet",
    "connect_reply", "announce_reply", "scrape_reply", "error_reply",
    "ACTION_CONNECT", "ACTION_ANNOUNCE", "ACTION_SCRAPE", "ACTION_ERROR", "ANNOUNCE_SIZE",
]  # fmt: skip

#: The magic of a connect request.
PROTOCOL_ID: Final = 0x41727101980
ACTION_CONNECT, ACTION_ANNOUNCE, ACTION_SCRAPE, ACTION_ERROR = 0, 1, 2, 3
#: An announce's fixed part; BEP 41 options may follow and are ignored.
ANNOUNCE_SIZE: Final = 98
_HEADER: Final = struct.Struct(">QII")  # connection id (or protocol id), action, transaction id
_ANNOUNCE: Final = struct.Struct(">20s20sQQQIIIiH")  # info-hash, peer id, downloaded, left, uploaded, event, ip, key, num_want, port
_REPLY: Final = struct.Struct(">II")
_ANNOUNCE_REPLY: Final = struct.Struct(">IIIII")
_SCRAPE_ENTRY: Final = struct.Struct(">III")


class BadPacket(ValueError):
    """A datagram that is not a BEP 15 request: dropped."""


class ConnectRequest(NamedTuple):
    transaction_id: int


class AnnounceRequest(NamedTuple):
    connection_id: bytes
    transaction_id: int
    info_hash: bytes
    peer_id: bytes
    left: int
    event: int
    ip: int  # 0: none claimed
    numwant: int  # -1: the tracker's default
    port: int


class ScrapeRequest(NamedTuple):
    connection_id: bytes
    transaction_id: int
    info_hashes: list[bytes]


def parse_packet(data: bytes) -> ConnectRequest | AnnounceRequest | ScrapeRequest:
    """The request ``data`` holds; :class:`BadPacket` when it is none."""
    if len(data) < 16:
        raise BadPacket(f"{len(data)} bytes: shorter than any request")
    first, action, transaction_id = _HEADER.unpack_from(data)
    if action == ACTION_CONNECT:
        if first != PROTOCOL_ID:
            raise BadPacket("connect without the protocol id")
        return ConnectRequest(transaction_id)
    if action == ACTION_ANNOUNCE:
        if len(data) < ANNOUNCE_SIZE:
            raise BadPacket(f"announce of {len(data)} bytes, fewer than {ANNOUNCE_SIZE}")
        info_hash, peer_id, _, left, _, event, ip, _, numwant, port = _ANNOUNCE.unpack_from(data, 16)
        return AnnounceRequest(data[:8], transaction_id, info_hash, peer_id, left, event, ip, numwant, port)
    if action == ACTION_SCRAPE:
        count, rest = divmod(len(data) - 16, 20)
        if rest or not 0 < count <= MAX_SCRAPE_HASHES:
            raise BadPacket(f"scrape of {len(data)} bytes: not 16 + 20 per info-hash, 1..{MAX_SCRAPE_HASHES} of them")
        return ScrapeRequest(data[:8], transaction_id, [data[i : i + 20] for i in range(16, len(data), 20)])
    raise BadPacket(f"unknown action {action}")


def connect_reply(transaction_id: int, connection_id: bytes) -> bytes:
    return _REPLY.pack(ACTION_CONNECT, transaction_id) + connection_id


def announce_reply(transaction_id: int, interval: int, leechers: int, seeders: int, peers: bytes) -> bytes:
    """Counts and compact peers: 6-byte IPv4 entries, or 18-byte IPv6 ones to a client on IPv6 (BEP 15)."""
    return _ANNOUNCE_REPLY.pack(ACTION_ANNOUNCE, transaction_id, interval, leechers, seeders) + peers


def scrape_reply(transaction_id: int, counts: list[tuple[int, int, int]]) -> bytes:
    """Per info-hash, in the order asked: seeders, completed, leechers."""
    return _REPLY.pack(ACTION_SCRAPE, transaction_id) + b"".join(_SCRAPE_ENTRY.pack(*entry) for entry in counts)


def error_reply(transaction_id: int, message: str) -> bytes:
    return _REPLY.pack(ACTION_ERROR, transaction_id) + message.encode("utf-8", "replace")
