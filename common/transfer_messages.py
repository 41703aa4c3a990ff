"""Chunk transfer between peers (PROTOCOL.md §6): REQUEST_CHUNK, CHUNK_DATA, CHUNK_ERROR, CANCEL_CHUNK.

Kept apart from :mod:`common.messages`, which re-exports them, because the
transfer messages are the hot path and grow on their own (each capability
adds its messages in a module of its own, listed in ``MESSAGE_TYPES`` there).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from common.errors import ValidationError
from common.fields import MAX_TEXT, Record, chunk_index, file_id_bytes, text_of, u16, u32
from common.framing import Opcode

__all__ = ["RequestChunk", "ChunkData", "ChunkError", "CancelChunk"]


@attrs.frozen
class RequestChunk(Record):
    """->P: send chunk ``index`` of ``file_id``. Raw binary: file id, u32 index."""

    OPCODE: ClassVar[Opcode] = Opcode.REQUEST_CHUNK
    file_id: bytes = attrs.field(validator=file_id_bytes)
    index: int = attrs.field(validator=chunk_index)


@attrs.frozen
class CancelChunk(Record):
    """->P: forget a queued REQUEST_CHUNK for this chunk if not started; no reply."""

    OPCODE: ClassVar[Opcode] = Opcode.CANCEL_CHUNK
    file_id: bytes = attrs.field(validator=file_id_bytes)
    index: int = attrs.field(validator=chunk_index)


def _buffer(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ValidationError("chunk data must be bytes")


@attrs.frozen(eq=False)
class ChunkData:
    """P->: the chunk's raw bytes, never re-encoded. Raw binary: file id, u32 index, data.

    ``data`` may be a memoryview into the receive buffer (no copy); equality
    compares contents.
    """

    OPCODE: ClassVar[Opcode] = Opcode.CHUNK_DATA
    file_id: bytes = attrs.field(validator=file_id_bytes)
    index: int = attrs.field(validator=chunk_index)
    data: bytes | bytearray | memoryview = attrs.field(validator=_buffer)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkData):
            return NotImplemented
        return (self.file_id, self.index) == (other.file_id, other.index) and bytes(self.data) == bytes(other.data)

    __hash__ = None  # type: ignore[assignment]


@attrs.frozen
class ChunkError(Record):
    """P->: the request for this chunk fails; ``code`` is NOT_HELD, BUSY or BAD_REQUEST."""

    OPCODE: ClassVar[Opcode] = Opcode.CHUNK_ERROR
    file_id: bytes = attrs.field(validator=file_id_bytes)
    index: int = attrs.field(validator=u32)
    code: int = attrs.field(validator=u16)
    message: str = attrs.field(default="", validator=text_of(MAX_TEXT))
