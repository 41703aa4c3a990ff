"""The sans-I/O codec: bytes in, messages out; messages in, bytes out.

Use it as h11's ``Connection`` (``common/PROTOCOL.md`` has the wire format)::

    codec = Codec()
    codec.receive_data(data)          # b"" means the peer closed (EOF)
    while (event := codec.next_event()) is not NEED_DATA:
        ...                           # a message, or CLOSED after a clean EOF
    wire_bytes = codec.send(message)

Large frames (chunk data) can skip one copy: while a frame body is being
received, :meth:`Codec.get_buffer` returns a writable view of the body buffer
for the shell to ``recv_into``, followed by :meth:`Codec.buffer_updated`
(the pattern of :class:`asyncio.BufferedProtocol`). CHUNK_DATA then arrives as
a memoryview over that buffer.

Control payloads are MessagePack arrays of the message's fields (compact,
binary-safe, and it cannot run code, unlike pickle); REQUEST_CHUNK,
CANCEL_CHUNK and CHUNK_DATA are raw binary so chunk bytes are never re-encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final

import msgpack

from common.errors import LocalProtocolError, RemoteProtocolError, ValidationError
from common.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    HEADER_SIZE,
    ErrorCode,
    FrameHeader,
    Opcode,
    decode_header,
    encode_header,
)
from common.messages import (
    MESSAGE_TYPES,
    CancelChunk,
    ChunkData,
    Message,
    RequestChunk,
)

__all__ = ["Codec", "NEED_DATA", "CLOSED", "Sentinel", "LargeFrame", "encode_message", "decode_payload", "chunk_data_prefix", "chunk_data_body_size"]


class Sentinel:
    """A named marker returned by :meth:`Codec.next_event` (compare with ``is``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = Sentinel("NEED_DATA")
CLOSED: Final = Sentinel("CLOSED")

class LargeFrame:
    """A frame of at least LARGE_FRAME bytes, not decoded yet (``Codec(defer_large=True)``).

    Decoding the largest manifest takes most of a second: a server decodes it with
    :func:`decode_payload` in a worker thread, not on the event loop every
    connection shares.
    """

    __slots__ = ("opcode", "payload")

    def __init__(self, opcode: Opcode, payload: bytearray) -> None:
        self.opcode = opcode
        self.payload = payload

    def __repr__(self) -> str:
        return f"LargeFrame({self.opcode.name}, {len(self.payload)} bytes)"


_CHUNK_PREFIX: Final = struct.Struct(">32sI")
_RAW_OPCODES: Final = frozenset({Opcode.REQUEST_CHUNK, Opcode.CANCEL_CHUNK, Opcode.CHUNK_DATA})
#: Frames at least this large are received into a buffer of their own rather
#: than through the shared receive buffer.
LARGE_FRAME: Final = 64 * 1024
#: Allocate a large frame's body at once only up to this size; above it the
#: buffer grows as bytes arrive, so a header alone cannot make us reserve 16 MiB.
EAGER_BODY_LIMIT: Final = 2 * 1024 * 1024 + 4096


# ---------------------------------------------------------------------------
# Payloads (pure functions)
# ---------------------------------------------------------------------------
def _payload(message: Message) -> bytes:
    if isinstance(message, (RequestChunk, CancelChunk)):
        return _CHUNK_PREFIX.pack(message.file_id, message.index)
    if isinstance(message, ChunkData):
        return _CHUNK_PREFIX.pack(message.file_id, message.index) + bytes(message.data)
    try:
        packed: bytes = msgpack.packb(message.to_fields(), use_bin_type=True)
        return packed
    except (ValueError, TypeError, OverflowError) as exc:
        # Values the validators let through but MessagePack cannot carry: integers
        # beyond 64 bits, text with lone surrogates. Our bug, not the peer's.
        raise LocalProtocolError(f"cannot encode {type(message).__name__}: {exc}") from None


def encode_message(message: Message, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """The whole frame (header and payload) for ``message``."""
    if type(message) not in MESSAGE_TYPES.values():
        raise LocalProtocolError(f"{type(message).__name__} is not a chunkswarm message")
    payload = _payload(message)
    return encode_header(message.OPCODE, len(payload), max_frame_size=max_frame_size) + payload


def chunk_data_body_size(data_length: int) -> int:
    """Bytes of a CHUNK_DATA frame's body (after the header) carrying ``data_length`` chunk bytes."""
    return _CHUNK_PREFIX.size + data_length


def chunk_data_prefix(file_id: bytes, index: int, data_length: int, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Header and prefix of a CHUNK_DATA frame whose ``data_length`` data bytes the caller sends itself.

    Lets a server send chunk bytes straight from the file (``os.sendfile``)
    without building the frame in memory.
    """
    prefix = _CHUNK_PREFIX.pack(file_id, index)
    return encode_header(Opcode.CHUNK_DATA, len(prefix) + data_length, max_frame_size=max_frame_size) + prefix


def decode_payload(opcode: Opcode, payload: bytes | bytearray) -> Message:
    """Turn one frame's payload into its message, or raise :class:`RemoteProtocolError`."""
    cls = MESSAGE_TYPES[opcode]
    try:
        if opcode in _RAW_OPCODES:
            return _decode_raw(opcode, payload)
        fields = msgpack.unpackb(payload, raw=False, use_list=False, strict_map_key=True, ext_hook=_refuse_ext)
        if not isinstance(fields, tuple):
            raise ValidationError(f"payload must be a MessagePack array, got {type(fields).__name__}")
        message: Message = cls.from_fields(fields)
        return message
    except (ValidationError, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"malformed {opcode.name} payload: {exc}", error_code=ErrorCode.BAD_REQUEST) from None


def _refuse_ext(code: int, data: bytes) -> object:
    # Ext types never appear (PROTOCOL.md §2). Left alone, msgpack would hand one over as an
    # ExtType, a 2-tuple that could pass for an array of two fields.
    raise ValidationError(f"MessagePack ext type {code} is not allowed")


def _decode_raw(opcode: Opcode, payload: bytes | bytearray) -> Message:
    if opcode is Opcode.CHUNK_DATA:
        if len(payload) < _CHUNK_PREFIX.size:
            raise ValidationError(f"{len(payload)} bytes is too short for a chunk prefix")
        file_id, index = _CHUNK_PREFIX.unpack_from(payload)
        data = memoryview(payload)[_CHUNK_PREFIX.size :]
        return ChunkData(file_id, index, data)
    if len(payload) != _CHUNK_PREFIX.size:
        raise ValidationError(f"needs exactly {_CHUNK_PREFIX.size} bytes, got {len(payload)}")
    file_id, index = _CHUNK_PREFIX.unpack(payload)
    return RequestChunk(file_id, index) if opcode is Opcode.REQUEST_CHUNK else CancelChunk(file_id, index)


# ---------------------------------------------------------------------------
# The incremental decoder
# ---------------------------------------------------------------------------
class Codec:
    """Incremental frame decoder and encoder for one connection (both directions)."""

    def __init__(
        self,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_receive_size: int | None = None,
        allocate_body: Callable[[int], bytearray] = bytearray,
        defer_large: bool = False,
    ) -> None:
        self.max_frame_size = max_frame_size
        #: The largest frame accepted from the other side (default: ``max_frame_size``). A
        #: chunk server receives only small requests, so it can refuse a 16 MiB header at once.
        self.max_receive_size = max_frame_size if max_receive_size is None else max_receive_size
        #: Makes the buffer a large frame's body is received into, of exactly the size asked
        #: (its content is overwritten): a downloader passes a pool's, so chunk after chunk
        #: is received into the same memory.
        self.allocate_body = allocate_body
        #: Hand frames of LARGE_FRAME bytes or more over as :class:`LargeFrame`, undecoded.
        self.defer_large = defer_large
        self._buffer = bytearray()
        self._header: FrameHeader | None = None
        self._body: bytearray | None = None  # large frame being received
        self._filled = 0
        self._eof = False
        #: Why the codec refuses further use, once it does. The reason only, not the
        #: exception: its traceback holds the frames of the shell that called us,
        #: and through them this codec, a cycle only the cyclic collector frees.
        self._refusal: str | None = None

    # -- receiving ----------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer; ``b""`` means end of stream."""
        self._check_usable()
        if self._eof:
            raise LocalProtocolError("receive_data after end of stream")
        if not data:
            self._eof = True
            return
        if self._body is not None:
            taken = self._fill_body(data)
            data = memoryview(data)[taken:]
        self._buffer += data

    def get_buffer(self) -> memoryview | None:
        """A view to receive the next bytes into directly, or None when plain receive_data fits better."""
        self._check_usable()
        body = self._body
        if body is None or self._header is None:
            return None
        if self._filled == len(body):
            self._grow_body()
            body = self._body
            assert body is not None
        return memoryview(body)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the view from :meth:`get_buffer`; 0 means end of stream."""
        self._check_usable()
        if nbytes == 0:
            self.receive_data(b"")
            return
        assert self._body is not None and self._filled + nbytes <= len(self._body)
        self._filled += nbytes

    def next_event(self) -> Message | LargeFrame | Sentinel:
        """The next whole message, ``NEED_DATA``, or ``CLOSED`` after a clean end of stream (or a :class:`LargeFrame`, if deferred)."""
        self._check_usable()
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._refusal = exc.reason
            self._buffer = bytearray()
            self._body = None
            raise

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages (for idle/slow-loris accounting)."""
        return len(self._buffer) + self._filled + (HEADER_SIZE if self._header is not None else 0)

    def discard(self) -> None:
        """Free everything buffered and refuse further use: for a connection about to be closed."""
        if self._refusal is None:
            self._refusal = "input discarded: the connection is closing"
        self._buffer = bytearray()
        self._body = None
        self._header = None
        self._filled = 0

    @property
    def reserved(self) -> int:
        """Bytes of memory held for input not returned yet, as allocated (a large frame's body counts in full)."""
        return len(self._buffer) + (len(self._body) if self._body is not None else 0)

    def _next_event(self) -> Message | LargeFrame | Sentinel:
        payload: bytes | bytearray
        header = self._header
        if header is None:
            if len(self._buffer) < HEADER_SIZE:
                return self._need_more(partial=bool(self._buffer))
            buffer = self._buffer
            header = decode_header(buffer, max_frame_size=self.max_receive_size)
            end = HEADER_SIZE + header.length
            if header.length < LARGE_FRAME and len(buffer) >= end:
                # The usual case, a small frame already whole: one copy of the payload
                # and one deletion, without going through the partial-frame state.
                payload = buffer[HEADER_SIZE:end]
                del buffer[:end]
                return decode_payload(header.opcode, payload)
            del buffer[:HEADER_SIZE]
            self._header = header
            if header.length >= LARGE_FRAME:
                size = min(header.length, EAGER_BODY_LIMIT)
                self._body = self.allocate_body(size)
                if len(self._body) != size:
                    raise LocalProtocolError(f"allocate_body returned {len(self._body)} bytes for a {size}-byte body")
                self._filled = 0
                taken = self._fill_body(self._buffer)
                del self._buffer[:taken]
        if self._body is not None:
            if self._filled < header.length:
                return self._need_more(partial=True)
            payload = self._body
            self._body = None
            self._filled = 0
            if self.defer_large:
                self._header = None
                return LargeFrame(header.opcode, payload)
        else:
            if len(self._buffer) < header.length:
                return self._need_more(partial=True)
            payload = bytes(self._buffer[: header.length])
            del self._buffer[: header.length]
        self._header = None
        return decode_payload(header.opcode, payload)

    def _need_more(self, *, partial: bool) -> Sentinel:
        if not self._eof:
            return NEED_DATA
        if partial:
            raise RemoteProtocolError("connection closed in the middle of a frame (truncated)", error_code=ErrorCode.BAD_REQUEST)
        return CLOSED

    def _fill_body(self, data: bytes | bytearray | memoryview) -> int:
        assert self._body is not None and self._header is not None
        taken = 0
        while taken < len(data) and self._filled < self._header.length:
            if self._filled == len(self._body):
                self._grow_body()
            room = len(self._body) - self._filled
            piece = min(room, len(data) - taken)
            self._body[self._filled : self._filled + piece] = memoryview(data)[taken : taken + piece]
            self._filled += piece
            taken += piece
        return taken

    def _grow_body(self) -> None:
        # Doubling keeps the total copying under twice the frame size.
        assert self._body is not None and self._header is not None
        # A new buffer rather than extend(): resizing fails with BufferError while a
        # view from get_buffer() is still alive (a shell's local, a traceback), and
        # such a view is full by now, so nothing more is written through it.
        new_size = min(self._header.length, 2 * len(self._body))
        body = bytearray(new_size)
        body[: self._filled] = memoryview(self._body)[: self._filled]
        self._body = body

    def _check_usable(self) -> None:
        if self._refusal is not None:
            raise RemoteProtocolError(f"connection unusable after an earlier protocol error: {self._refusal}")

    # -- sending ------------------------------------------------------------
    def send(self, message: Message) -> bytes:
        """The bytes to send for ``message``."""
        return encode_message(message, max_frame_size=self.max_frame_size)

    def chunk_data_prefix(self, file_id: bytes, index: int, data_length: int) -> bytes:
        """See :func:`chunk_data_prefix`."""
        return chunk_data_prefix(file_id, index, data_length, max_frame_size=self.max_frame_size)


