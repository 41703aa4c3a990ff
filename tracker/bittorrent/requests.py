"""Announce and scrape query strings (BEP 3, BEP 23, BEP 48), parsed into requests; sans-I/O.

The HTTP shell hands over the query string of ``GET /announce?...`` as bytes;
:func:`parse_announce` and :func:`parse_scrape` percent-decode the binary
fields (``info_hash``, ``peer_id``: 20 bytes each), check the numbers (ASCII
digits only: ``int()`` would take ``+5``, ``1_000`` or `` 7``) and refuse what
is missing or wrong with :class:`BtFailure`, whose reason the client is told.
"""

from __future__ import annotations

import ipaddress
from typing import Final, NamedTuple
from urllib.parse import unquote_to_bytes

from tracker.bittorrent.errors import BtFailure
from tracker.bittorrent.swarms import EVENT_COMPLETED, EVENT_NONE, EVENT_STARTED, EVENT_STOPPED

__all__ = ["Announce", "parse_announce", "parse_scrape", "percent_decode", "MAX_SCRAPE_HASHES", "HASH_LENGTH"]

#: An info-hash (SHA-1 of the info dict) and a peer id are both 20 bytes.
HASH_LENGTH: Final = 20
#: Info-hashes one scrape may name (a UDP scrape fits 74; an HTTP one is bounded by the request line too).
MAX_SCRAPE_HASHES: Final = 74
#: Digits a number may have: a byte count fits 20 digits (2**64); more is not a number a client sends.
_MAX_DIGITS: Final = 20
_EVENTS: Final = {
    b"": EVENT_NONE, b"empty": EVENT_NONE, b"paused": EVENT_NONE,  # paused: BEP 21, a partial seed; counted as announced
    b"started": EVENT_STARTED, b"completed": EVENT_COMPLETED, b"stopped": EVENT_STOPPED,
}  # fmt: skip
_ENCODED_HASH: Final = b"%" * HASH_LENGTH


class Announce(NamedTuple):
    """One announce, as a client sent it (``ip`` only where the tracker honours a claimed address).

    A named tuple rather than an attrs class: made once per announce, and a tuple is made several times faster.
    """

    info_hash: bytes
    peer_id: bytes
    port: int
    left: int
    event: int = EVENT_NONE
    #: None: the tracker's default.
    numwant: int | None = None
    compact: bool = True
    no_peer_id: bool = False
    ip: str | None = None


def percent_decode(value: bytes) -> bytes:
    """``%XX`` escapes decoded; the common case of 20 bytes each escaped takes one ``bytes.fromhex``."""
    if len(value) == 3 * HASH_LENGTH and value[::3] == _ENCODED_HASH:
        try:
            return bytes.fromhex(value.replace(b"%", b"").decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            pass  # not hex after all: the general path says what it is
    return unquote_to_bytes(value)


def _number(name: str, value: bytes) -> int:
    if not value.isdigit() or len(value) > _MAX_DIGITS:
        raise BtFailure(f"{name} must be a non-negative decimal number")
    return int(value)


def _hash(name: str, value: bytes) -> bytes:
    decoded = percent_decode(value)
    if len(decoded) != HASH_LENGTH:
        raise BtFailure(f"{name} must be {HASH_LENGTH} bytes, got {len(decoded)}")
    return decoded


def parse_announce(query: bytes, *, allow_claimed_ip: bool = False) -> Announce:
    """The announce a query string asks for; :class:`BtFailure` says what is missing or wrong.

    ``info_hash``, ``peer_id`` and ``port`` are required; ``left`` missing
    counts as a leecher's. Unknown parameters are ignored (clients send
    ``key``, ``supportcrypto``, ``trackerid`` ...), and of a repeated one the
    last counts. ``ip`` is read only with ``allow_claimed_ip``; otherwise the
    address handed out is the observed one.
    """
    params = dict(part.partition(b"=")[::2] for part in query.split(b"&"))
    get = params.get
    value = get(b"info_hash")
    if value is None:
        raise BtFailure("missing info_hash")
    info_hash = _hash("info_hash", value)
    value = get(b"peer_id")
    if value is None:
        raise BtFailure("missing peer_id")
    peer_id = _hash("peer_id", value)
    value = get(b"port")
    if value is None:
        raise BtFailure("missing port")
    port = _number("port", value)
    if not 0 < port < 65536:
        raise BtFailure("port must be 1..65535")
    value = get(b"left")
    left = 1 if value is None else _number("left", value)
    value = get(b"event")
    event = EVENT_NONE
    if value is not None:
        found = _EVENTS.get(value)
        if found is None:
            raise BtFailure("event must be started, completed, stopped or empty")
        event = found
    value = get(b"numwant")
    numwant = None
    if value is not None:
        if not value.isdigit():
            raise BtFailure("numwant must be a non-negative decimal number")
        numwant = int(value) if len(value) <= _MAX_DIGITS else 1 << 64  # huge: capped by the caller
    value = get(b"compact")
    compact = value != b"0"
    value = get(b"no_peer_id")
    no_peer_id = value is not None and value not in (b"", b"0")
    ip = None
    if allow_claimed_ip:
        value = get(b"ip")
        if value is not None:
            ip = _claimed_ip(value)
    return Announce(info_hash, peer_id, port, left, event, numwant, compact, no_peer_id, ip)


def _claimed_ip(value: bytes) -> str:
    try:
        address = ipaddress.ip_address(percent_decode(value).decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise BtFailure("ip must be an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def parse_scrape(query: bytes) -> list[bytes]:
    """The info-hashes a scrape names (BEP 48), in order, at most ``MAX_SCRAPE_HASHES``; a scrape of everything is refused."""
    hashes: list[bytes] = []
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"info_hash":
            if len(hashes) == MAX_SCRAPE_HASHES:
                raise BtFailure(f"a scrape may name at most {MAX_SCRAPE_HASHES} info_hash")
            hashes.append(_hash("info_hash", value))
    if not hashes:
        raise BtFailure("name the info_hash to scrape: this tracker does not list all its torrents")
    return hashes
