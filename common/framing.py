"""Frame layout of the chunkswarm wire protocol (see ``common/PROTOCOL.md``).

Every frame is an 8-byte header followed by ``length`` bytes of payload::

    offset  size  field
    0       2     magic      b"CS"
    2       1     version    PROTOCOL_VERSION
    3       1     opcode     an :class:`Opcode`
    4       4     length     payload length, unsigned big-endian

Pure functions over bytes: nothing here touches a socket.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from common.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAGIC",
    "PROTOCOL_VERSION",
    "HEADER",
    "HEADER_SIZE",
    "DEFAULT_MAX_FRAME_SIZE",
    "Opcode",
    "ErrorCode",
    "FrameHeader",
    "encode_header",
    "decode_header",
]

MAGIC: Final = b"CS"
PROTOCOL_VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBBI")
HEADER_SIZE: Final = HEADER.size

#: Default cap on one frame's payload: a 16 MiB chunk (the largest chunk size
#: allowed) plus its 36-byte prefix, or a manifest of up to 2**19 chunk hashes,
#: with room to spare. Anything larger is refused before it is buffered.
DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024 + 4096


class Opcode(enum.IntEnum):
    """Every message of the protocol. ``->T`` is sent to the tracker, ``->P`` to a peer."""

    # Connection set-up, on every connection (tracker and peer-to-peer).
    HELLO = 0x01  # client -> server: version, peer id, listen port
    WELCOME = 0x02  # server -> client: version, server id, heartbeat interval, seen address
    # Membership (->T).
    REGISTER = 0x03  # join the swarm as a live peer serving on a port
    DEREGISTER = 0x04  # leave: drop the peer and all its replicas
    HEARTBEAT = 0x05  # still alive
    OK = 0x06  # generic success reply (T->)
    IDENTIFY = 0x07  # the client's key and proof (capability identity, PROTOCOL.md §8.6)
    SWARM_CHALLENGE = 0x08  # a fresh nonce and the sender's public key (capability swarm, PROTOCOL.md §8.6)
    SWARM_PROOF = 0x09  # proof of swarm membership over both challenges and keys (capability swarm)
    # Catalogue and replicas (->T).
    PUBLISH = 0x10  # a file manifest
    PUBLISHED = 0x11  # reply: the file id now listed
    ANNOUNCE = 0x12  # chunk ranges of a file the sender holds
    GET_MANIFEST = 0x13  # ask for a file's manifest
    MANIFEST = 0x14  # reply: the manifest
    WHO_HAS = 0x15  # ask who holds which chunks of a file
    HOLDERS = 0x16  # reply: holders with their address and chunk bitfield
    LIST_FILES = 0x17  # list or search files
    FILE_LIST = 0x18  # reply: one entry per file
    STATS = 0x19  # ask for counters
    STATS_REPLY = 0x1A  # reply: counters
    WITHDRAW = 0x1B  # chunk ranges the sender no longer serves (capability withdraw, PROTOCOL.md §8.5)
    UNPUBLISH = 0x1C  # take a file one published out of the catalogue (capability unpublish, PROTOCOL.md §8.7)
    LOOKUP = 0x1D  # the files an exact name or a file id prefix names (capability lookup, PROTOCOL.md §8.9)
    LIST_TORRENTS = 0x1E  # the BitTorrent swarms the tracker serves (capability bittorrent, PROTOCOL.md §8.12)
    TORRENT_LIST = 0x1F  # reply: one entry per BitTorrent swarm
    # Collections (->T, capability collections, PROTOCOL.md §8.11).
    PUBLISH_COLLECTION = 0x40  # a signed collection version to make current
    GET_COLLECTION = 0x41  # ask for a collection's current version
    COLLECTION = 0x42  # reply: a collection version (empty: a watch saw no change)
    WATCH_COLLECTION = 0x43  # answered when the collection's root differs from the one known, or after a bounded wait
    # Chunk transfer (->P), pipelined; replies may come in any order.
    REQUEST_CHUNK = 0x20  # file id + chunk index
    CHUNK_DATA = 0x21  # reply: file id + chunk index + raw chunk bytes
    CHUNK_ERROR = 0x22  # reply: file id + chunk index + error code + text
    CANCEL_CHUNK = 0x23  # drop a queued request (endgame); no reply
    # Either direction, either service.
    ERROR = 0x7F  # typed error: code + human message


class ErrorCode(enum.IntEnum):
    """The ``code`` of ERROR and CHUNK_ERROR replies."""

    BAD_REQUEST = 1  # malformed frame or message, or a message out of order
    UNSUPPORTED_VERSION = 2  # the header or HELLO names another protocol version
    NOT_REGISTERED = 3  # a request that needs REGISTER came first
    UNKNOWN_FILE = 4  # no such file id
    INVALID_MANIFEST = 5  # the manifest is not self-consistent
    NOT_HELD = 6  # the peer does not hold (or no longer offers) that chunk
    BUSY = 7  # the server is at its limit; try another peer or later
    TOO_MANY_CONNECTIONS = 8  # connection refused at the connection cap
    FRAME_TOO_LARGE = 9  # a frame above the size limit
    INTERNAL = 10  # the server failed; not the client's fault
    TIMEOUT = 11  # the connection was idle too long
    IDENTITY_CONFLICT = 12  # that peer id is registered from another address
    MISSING_CAPABILITY = 13  # the other side requires a capability this side did not offer
    IDENTITY_REQUIRED = 14  # only an identified node may do that (capability identity, PROTOCOL.md §8.6)
    QUOTA_EXCEEDED = 15  # the publisher is at its quota of files or manifest bytes
    NOT_A_MEMBER = 16  # the proof of swarm membership failed (capability swarm, PROTOCOL.md §8.6)
    COLLECTION_CONFLICT = 40  # a collection version whose parent is not the current version (capability collections, §8.11)
    NOT_AN_OWNER = 41  # a collection version not signed by an owner, or whose signature does not verify (§8.11)
    UNKNOWN_COLLECTION = 42  # no collection of that name (§8.11)
    VERSION_PRUNED = 43  # a collection version the tracker no longer keeps; the message names the oldest kept (§8.11)


class FrameHeader:
    """A decoded header: plain slots rather than attrs, it is created per frame on the hot path."""

    __slots__ = ("opcode", "length")

    def __init__(self, opcode: Opcode, length: int) -> None:
        self.opcode = opcode
        self.length = length

    def __repr__(self) -> str:
        return f"FrameHeader({self.opcode.name}, {self.length})"


_OPCODES: Final = {int(op): op for op in Opcode}


def encode_header(opcode: Opcode, length: int, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Return the 8-byte header of a frame with ``length`` payload bytes."""
    if not 0 <= length <= max_frame_size:
        raise LocalProtocolError(f"payload of {length} bytes exceeds the {max_frame_size}-byte frame limit")
    return HEADER.pack(MAGIC, PROTOCOL_VERSION, opcode, length)


def decode_header(data: bytes | bytearray | memoryview, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> FrameHeader:
    """Parse and check the first ``HEADER_SIZE`` bytes of ``data``.

    The length is checked against ``max_frame_size`` here, before anyone
    buffers the payload (h11's ``max_incomplete_event_size`` idea).
    """
    magic, version, opcode, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise RemoteProtocolError(f"bad magic {bytes(magic)!r}: not a chunkswarm frame", error_code=ErrorCode.BAD_REQUEST)
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"unsupported protocol version {version} (this side speaks {PROTOCOL_VERSION})", error_code=ErrorCode.UNSUPPORTED_VERSION
        )
    op = _OPCODES.get(opcode)
    if op is None:
        raise RemoteProtocolError(f"unknown opcode 0x{opcode:02x}", error_code=ErrorCode.BAD_REQUEST)
    if length > max_frame_size:
        raise RemoteProtocolError(
            f"{op.name} frame of {length} bytes exceeds the {max_frame_size}-byte limit", error_code=ErrorCode.FRAME_TOO_LARGE
        )
    return FrameHeader(op, length)
