"""Every message of the protocol as a frozen attrs class, validated at construction.

A message knows its :class:`~common.framing.Opcode` (``OPCODE``) and how to
turn itself into a list of plain values (``to_fields``) and back
(``from_fields``); :mod:`common.codec` does the bytes. Field meanings and
directions are documented in ``common/PROTOCOL.md``.

Validation is strict because decoded fields come from strangers: every
validator raises :class:`~common.errors.ValidationError` with a reason, which
the codec turns into a ``RemoteProtocolError``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from common.chunkset import Ranges
from common.errors import ValidationError
from common.framing import PROTOCOL_VERSION, ErrorCode, Opcode
from common.manifest import HASH_SIZE, MAX_CHUNKS, Manifest

__all__ = [
    "PEER_ID_SIZE",
    "MAX_TEXT",
    "MAX_HOLDERS",
    "Message",
    "Hello",
    "Welcome",
    "Register",
    "Deregister",
    "Heartbeat",
    "Ok",
    "Publish",
    "Published",
    "Announce",
    "GetManifest",
    "ManifestReply",
    "WhoHas",
    "Holder",
    "Holders",
    "ListFiles",
    "FileEntry",
    "FileList",
    "Stats",
    "StatsReply",
    "RequestChunk",
    "ChunkData",
    "ChunkError",
    "CancelChunk",
    "Error",
    "MESSAGE_TYPES",
]

PEER_ID_SIZE: Final = 20
MAX_TEXT: Final = 1024
MAX_HOLDERS: Final = 1000
MAX_LIST: Final = 100_000
MAX_U32: Final = 2**32 - 1


# ---------------------------------------------------------------------------
# Validators: strict about types because the values may come off the wire.
# ---------------------------------------------------------------------------
def _int_in(low: int, high: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValidationError(f"{attribute.name} must be an integer in {low}..{high}, got {value!r}")

    return check


def _bytes_of(size: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValidationError(f"{attribute.name} must be {size} bytes")

    return check


def _text(max_length: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or len(value) > max_length:
            raise ValidationError(f"{attribute.name} must be text of at most {max_length} characters")

    return check


def _host(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ValidationError(f"{attribute.name} must be an IP address")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError(f"{attribute.name} {value[:64]!r} is not an IP address") from None


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86_400:
        raise ValidationError(f"{attribute.name} must be 0..86400 seconds, got {value!r}")


def _ranges(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_CHUNKS:
        raise ValidationError(f"{attribute.name} must be a list of at most {MAX_CHUNKS} ranges")
    previous_stop = 0
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and type(item[0]) is int and type(item[1]) is int):
            raise ValidationError(f"{attribute.name} must hold [start, stop] integer pairs")
        start, stop = item
        if not previous_stop <= start < stop <= MAX_CHUNKS:
            raise ValidationError(f"{attribute.name} must be ascending, disjoint, non-empty ranges within 0..{MAX_CHUNKS}")
        previous_stop = stop


def _tuple_of(kind: type, max_items: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple) or len(value) > max_items or not all(isinstance(v, kind) for v in value):
            raise ValidationError(f"{attribute.name} must be at most {max_items} {kind.__name__} items")

    return check


def _to_tuple(value: object) -> object:
    # Lists are accepted for convenience; anything else is left for the validator to refuse.
    return tuple(value) if isinstance(value, list) else value


def _ranges_converter(value: object) -> object:
    # The decoder hands over tuples of tuples (the usual case, one new chunk): keep them.
    if type(value) is tuple and all(type(v) is tuple for v in value):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


_file_id = _bytes_of(HASH_SIZE)
_peer_id = _bytes_of(PEER_ID_SIZE)
_u16 = _int_in(0, 0xFFFF)
_u32 = _int_in(0, MAX_U32)
_port = _int_in(1, 0xFFFF)
_chunk_index = _int_in(0, MAX_CHUNKS - 1)


# ---------------------------------------------------------------------------
# The messages
# ---------------------------------------------------------------------------
class _Fields:
    """Default field mapping: the attrs fields in declaration order."""

    def to_fields(self) -> list[Any]:
        return [getattr(self, a.name) for a in attrs.fields(type(self))]  # type: ignore[arg-type]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> Any:
        expected = len(cls.__attrs_attrs__)  # type: ignore[attr-defined]  # attrs.fields(cls), minus its checks
        if len(fields) != expected:
            raise ValidationError(f"{cls.__name__} needs {expected} fields, got {len(fields)}")
        return cls(*fields)


@attrs.frozen
class Hello(_Fields):
    """Client -> server, first frame on every connection."""

    OPCODE: ClassVar[Opcode] = Opcode.HELLO
    peer_id: bytes = attrs.field(validator=_peer_id)
    listen_port: int = attrs.field(default=0, validator=_u16)  # 0: this client serves nothing
    protocol_version: int = attrs.field(default=PROTOCOL_VERSION, validator=_int_in(0, 255))
    agent: str = attrs.field(default="", validator=_text(64))


@attrs.frozen
class Welcome(_Fields):
    """Server -> client, the reply to HELLO."""

    OPCODE: ClassVar[Opcode] = Opcode.WELCOME
    peer_id: bytes = attrs.field(validator=_peer_id)
    heartbeat_interval: float = attrs.field(default=0.0, validator=_seconds)  # 0: no heartbeats wanted
    observed_host: str = attrs.field(default="127.0.0.1", validator=_host)
    observed_port: int = attrs.field(default=0, validator=_u16)
    protocol_version: int = attrs.field(default=PROTOCOL_VERSION, validator=_int_in(0, 255))
    agent: str = attrs.field(default="", validator=_text(64))  # software and a label, for logs


@attrs.frozen
class Register(_Fields):
    """->T: become a live peer serving chunks on ``listen_port`` at the address the tracker sees."""

    OPCODE: ClassVar[Opcode] = Opcode.REGISTER
    listen_port: int = attrs.field(validator=_port)


@attrs.frozen
class Deregister(_Fields):
    """->T: leave the swarm; the tracker forgets the peer and its replicas."""

    OPCODE: ClassVar[Opcode] = Opcode.DEREGISTER


@attrs.frozen
class Heartbeat(_Fields):
    """->T: still alive; sent every ``heartbeat_interval`` seconds of WELCOME."""

    OPCODE: ClassVar[Opcode] = Opcode.HEARTBEAT


@attrs.frozen
class Ok(_Fields):
    """T->: the request succeeded and has nothing else to say."""

    OPCODE: ClassVar[Opcode] = Opcode.OK


@attrs.frozen
class Publish:
    """->T: list a file; the sender should ANNOUNCE its chunks next."""

    OPCODE: ClassVar[Opcode] = Opcode.PUBLISH
    manifest: Manifest = attrs.field(validator=attrs.validators.instance_of(Manifest))

    def to_fields(self) -> list[Any]:
        return _manifest_fields(self.manifest)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> Publish:
        return cls(_manifest_from_fields(fields))


@attrs.frozen
class Published(_Fields):
    """T->: the manifest is stored (durably) and listed under ``file_id``."""

    OPCODE: ClassVar[Opcode] = Opcode.PUBLISHED
    file_id: bytes = attrs.field(validator=_file_id)


@attrs.frozen
class Announce(_Fields):
    """->T: the sender holds (verified) the chunks in ``ranges`` of ``file_id``."""

    OPCODE: ClassVar[Opcode] = Opcode.ANNOUNCE
    file_id: bytes = attrs.field(validator=_file_id)
    ranges: Ranges = attrs.field(converter=_ranges_converter, validator=_ranges)


@attrs.frozen
class GetManifest(_Fields):
    """->T: ask for the manifest of ``file_id``."""

    OPCODE: ClassVar[Opcode] = Opcode.GET_MANIFEST
    file_id: bytes = attrs.field(validator=_file_id)


@attrs.frozen
class ManifestReply:
    """T->: the manifest asked for."""

    OPCODE: ClassVar[Opcode] = Opcode.MANIFEST
    manifest: Manifest = attrs.field(validator=attrs.validators.instance_of(Manifest))

    def to_fields(self) -> list[Any]:
        return _manifest_fields(self.manifest)

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> ManifestReply:
        return cls(_manifest_from_fields(fields))


@attrs.frozen
class WhoHas(_Fields):
    """->T: who holds chunks of ``file_id``? At most ``max_peers`` holders come back."""

    OPCODE: ClassVar[Opcode] = Opcode.WHO_HAS
    file_id: bytes = attrs.field(validator=_file_id)
    max_peers: int = attrs.field(default=50, validator=_int_in(1, MAX_HOLDERS))


@attrs.frozen
class Holder(_Fields):
    """One holder in HOLDERS: where it serves and a bitfield of its chunks (MSB first)."""

    peer_id: bytes = attrs.field(validator=_peer_id)
    host: str = attrs.field(validator=_host)
    port: int = attrs.field(validator=_port)
    bitfield: bytes = attrs.field(validator=attrs.validators.and_(attrs.validators.instance_of(bytes), attrs.validators.max_len(MAX_CHUNKS // 8)))


@attrs.frozen
class Holders:
    """T->: holders of ``file_id`` (the asker excluded), chosen at random when there are more."""

    OPCODE: ClassVar[Opcode] = Opcode.HOLDERS
    file_id: bytes = attrs.field(validator=_file_id)
    holders: tuple[Holder, ...] = attrs.field(converter=_to_tuple, validator=_tuple_of(Holder, MAX_HOLDERS))

    def to_fields(self) -> list[Any]:
        return [self.file_id, [h.to_fields() for h in self.holders]]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> Holders:
        file_id, holders = _exactly(cls, fields, 2)
        return cls(file_id, tuple(Holder.from_fields(_as_tuple(h)) for h in _as_tuple(holders)))


@attrs.frozen
class ListFiles(_Fields):
    """->T: files whose name contains ``pattern`` (case-insensitive; empty: all), at most ``limit``."""

    OPCODE: ClassVar[Opcode] = Opcode.LIST_FILES
    pattern: str = attrs.field(default="", validator=_text(255))
    limit: int = attrs.field(default=1000, validator=_int_in(1, MAX_LIST))


@attrs.frozen
class FileEntry(_Fields):
    """One file in FILE_LIST."""

    file_id: bytes = attrs.field(validator=_file_id)
    name: str = attrs.field(validator=_text(1024))
    size: int = attrs.field(validator=_int_in(0, 2**63 - 1))
    chunk_size: int = attrs.field(validator=_u32)
    chunk_count: int = attrs.field(validator=_int_in(0, MAX_CHUNKS))
    holders: int = attrs.field(validator=_u32)  # live peers holding at least one chunk
    complete_copies: int = attrs.field(validator=_u32)  # live peers holding every chunk


@attrs.frozen
class FileList:
    """T->: the files that matched LIST_FILES, newest first."""

    OPCODE: ClassVar[Opcode] = Opcode.FILE_LIST
    entries: tuple[FileEntry, ...] = attrs.field(converter=_to_tuple, validator=_tuple_of(FileEntry, MAX_LIST))

    def to_fields(self) -> list[Any]:
        return [[e.to_fields() for e in self.entries]]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> FileList:
        (entries,) = _exactly(cls, fields, 1)
        return cls(tuple(FileEntry.from_fields(_as_tuple(e)) for e in _as_tuple(entries)))


@attrs.frozen
class Stats(_Fields):
    """->T: ask for the tracker's counters."""

    OPCODE: ClassVar[Opcode] = Opcode.STATS


def _counters_converter(value: object) -> object:
    if isinstance(value, Mapping):
        return tuple(sorted(value.items()))
    return _ranges_converter(value)


def _counters(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or len(value) > 256:
        raise ValidationError("counters must be at most 256 name/value pairs")
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and len(item[0]) <= 64
                and type(item[1]) in (int, float)):
            raise ValidationError("counters must be [name, number] pairs")


@attrs.frozen
class StatsReply(_Fields):
    """T->: named counters (peers, files, replicas, connections, requests ...)."""

    OPCODE: ClassVar[Opcode] = Opcode.STATS_REPLY
    counters: tuple[tuple[str, int | float], ...] = attrs.field(converter=_counters_converter, validator=_counters)

    def as_dict(self) -> dict[str, int | float]:
        return dict(self.counters)


@attrs.frozen
class RequestChunk(_Fields):
    """->P: send chunk ``index`` of ``file_id``. Raw binary: file id, u32 index."""

    OPCODE: ClassVar[Opcode] = Opcode.REQUEST_CHUNK
    file_id: bytes = attrs.field(validator=_file_id)
    index: int = attrs.field(validator=_chunk_index)


@attrs.frozen
class CancelChunk(_Fields):
    """->P: forget a queued REQUEST_CHUNK for this chunk if not started; no reply."""

    OPCODE: ClassVar[Opcode] = Opcode.CANCEL_CHUNK
    file_id: bytes = attrs.field(validator=_file_id)
    index: int = attrs.field(validator=_chunk_index)


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
    file_id: bytes = attrs.field(validator=_file_id)
    index: int = attrs.field(validator=_chunk_index)
    data: bytes | bytearray | memoryview = attrs.field(validator=_buffer)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkData):
            return NotImplemented
        return (self.file_id, self.index) == (other.file_id, other.index) and bytes(self.data) == bytes(other.data)

    __hash__ = None  # type: ignore[assignment]


@attrs.frozen
class ChunkError(_Fields):
    """P->: the request for this chunk fails; ``code`` is NOT_HELD, BUSY or BAD_REQUEST."""

    OPCODE: ClassVar[Opcode] = Opcode.CHUNK_ERROR
    file_id: bytes = attrs.field(validator=_file_id)
    index: int = attrs.field(validator=_u32)
    code: int = attrs.field(validator=_u16)
    message: str = attrs.field(default="", validator=_text(MAX_TEXT))


@attrs.frozen
class Error(_Fields):
    """Either way: a typed error. From a server it answers the last request, or precedes a close."""

    OPCODE: ClassVar[Opcode] = Opcode.ERROR
    code: int = attrs.field(validator=_u16)
    message: str = attrs.field(default="", validator=_text(MAX_TEXT))

    @property
    def code_name(self) -> str:
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"code {self.code}"


# ---------------------------------------------------------------------------
# Helpers for nested values
# ---------------------------------------------------------------------------
def _as_tuple(value: object) -> tuple[Any, ...]:
    if not isinstance(value, (tuple, list)):
        raise ValidationError(f"expected a list, got {type(value).__name__}")
    return tuple(value)


def _exactly(cls: type, fields: tuple[Any, ...], count: int) -> tuple[Any, ...]:
    if len(fields) != count:
        raise ValidationError(f"{cls.__name__} needs {count} fields, got {len(fields)}")
    return fields


def _manifest_fields(manifest: Manifest) -> list[Any]:
    return list(manifest.record())


def _manifest_from_fields(fields: tuple[Any, ...]) -> Manifest:
    return Manifest.from_record(fields)


Message = (
    Hello | Welcome | Register | Deregister | Heartbeat | Ok | Publish | Published | Announce | GetManifest
    | ManifestReply | WhoHas | Holders | ListFiles | FileList | Stats | StatsReply | RequestChunk | ChunkData
    | ChunkError | CancelChunk | Error
)

#: Opcode -> message class, for the decoder.
MESSAGE_TYPES: Final[dict[Opcode, Any]] = {
    cls.OPCODE: cls
    for cls in (
        Hello, Welcome, Register, Deregister, Heartbeat, Ok, Publish, Published, Announce, GetManifest,
        ManifestReply, WhoHas, Holders, ListFiles, FileList, Stats, StatsReply, RequestChunk, ChunkData,
        ChunkError, CancelChunk, Error,
    )
}
assert set(MESSAGE_TYPES) == set(Opcode), "every opcode needs a message class"
