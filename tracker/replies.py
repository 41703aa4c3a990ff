"""Reply frames the tracker builds from cached or plain values instead of message objects.

Each is byte for byte what ``Codec.send`` makes of the message (the tests
check it), but skips building validated attrs objects: for a WHO_HAS that is
50 ``Holder`` objects, each parsing its IP address, which would cost more
than everything else the tracker does for the request; for a listing of
100,000 files, a second of CPU on the event loop. The values come from the
registry, which only holds what was validated when it came in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import msgpack

from common.framing import Opcode, encode_header
from tracker.records import FileSummary, Replica

__all__ = ["holder_entry", "encode_holders", "file_entry", "encode_file_list", "FILE_LIST_OVERHEAD", "MORE_FIELD_MAX"]

#: The most a MessagePack array header takes.
_ARRAY_HEADER_MAX: Final = 5
#: The most a FILE_LIST payload holds besides its entries: ``[[entries ...]]``.
FILE_LIST_OVERHEAD: Final = 1 + _ARRAY_HEADER_MAX
#: The most FILE_LIST's ``more`` field takes (a u32).
MORE_FIELD_MAX: Final = 5


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes((0x90 | length,))
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def holder_entry(replica: Replica) -> bytes:
    """The MessagePack of one ``Holder``'s fields: peer id, host, port, bitfield."""
    return replica.peer.head + replica.bits


def encode_holders(file_id: bytes, parts: Sequence[bytes], *, max_frame_size: int) -> bytes:
    """The HOLDERS frame of the holders whose entries are ``parts[2 * i] + parts[2 * i + 1]`` (``FileRecord.parts``).

    Those that would pass ``max_frame_size`` are left out.
    """
    head = b"\x92\xc4\x20" + file_id  # [file id (bin 8, 32 bytes), [entries ...]]
    count = len(parts) // 2
    body = b"".join(parts)
    if len(head) + _ARRAY_HEADER_MAX + len(body) > max_frame_size:
        size = len(body)
        while len(head) + _ARRAY_HEADER_MAX + size > max_frame_size and count:
            count -= 1
            size -= len(parts[2 * count]) + len(parts[2 * count + 1])
        body = b"".join(parts[: 2 * count])
    array_header = _array_header(count)
    length = len(head) + len(array_header) + len(body)
    return b"".join((encode_header(Opcode.HOLDERS, length, max_frame_size=max_frame_size), head, array_header, body))


def file_entry(summary: FileSummary) -> bytes:
    """The MessagePack of one ``FileEntry``'s fields."""
    m = summary.manifest
    fields = [m.file_id, m.name, m.size, m.chunk_size, m.chunk_count, summary.holders, summary.complete_copies]
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


def encode_file_list(entries: Sequence[bytes], *, more: int = 0, max_frame_size: int) -> bytes:
    """The FILE_LIST frame of ``entries`` (:func:`file_entry`); raises ``LocalProtocolError`` if it would pass ``max_frame_size``.

    ``more`` (files left out, PROTOCOL.md §8.9) is a second field, there only when not 0.
    """
    body = b"".join(entries)
    array_header = _array_header(len(entries))
    tail = msgpack.packb(more) if more else b""
    length = 1 + len(array_header) + len(body) + len(tail)  # [[entries ...], more?]
    outer = b"\x92" if more else b"\x91"
    return b"".join((encode_header(Opcode.FILE_LIST, length, max_frame_size=max_frame_size), outer, array_header, body, tail))
