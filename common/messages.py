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

from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs

from common.capabilities import Capabilities, capabilities_converter, capabilities_validator
from common.chunkset import Ranges
from common.collection_messages import CollectionReply, GetCollection, PublishCollection, WatchCollection
from common.errors import ValidationError
from common.fields import (
    MAX_HOLDERS,
    MAX_LIST,
    MAX_TEXT,
    PEER_ID_SIZE,
    Record,
    as_tuple,
    at_least,
    chunk_ranges,
    file_id_bytes,
    int_in,
    ip_address_text,
    pairs_converter,
    peer_id_bytes,
    port_number,
    seconds,
    text_of,
    to_tuple,
    tuple_of,
    u16,
    u32,
)
from common.framing import PROTOCOL_VERSION, ErrorCode, Opcode
from common.identity_messages import CHALLENGE_BYTES, PROOF_BYTES, PUBLIC_KEY_BYTES, Identify, Unpublish, empty_or_bytes_of
from common.lookup_messages import Lookup
from common.manifest import MAX_CHUNKS, RECORD_FIELDS, Manifest
from common.swarm_messages import SwarmChallenge, SwarmProof
from common.torrent_messages import ListTorrents, TorrentEntry, TorrentList
from common.transfer_messages import CancelChunk, ChunkData, ChunkError, RequestChunk

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
    "Withdraw",
    "Identify",
    "Unpublish",
    "SwarmChallenge",
    "SwarmProof",
    "Lookup",
    "PublishCollection",
    "GetCollection",
    "WatchCollection",
    "CollectionReply",
    "ListTorrents",
    "TorrentEntry",
    "TorrentList",
    "MESSAGE_TYPES",
]


# ---------------------------------------------------------------------------
# The messages
# ---------------------------------------------------------------------------
@attrs.frozen
class Hello(Record):
    """Client -> server, first frame on every connection."""

    OPCODE: ClassVar[Opcode] = Opcode.HELLO
    REQUIRED: ClassVar[int] = 4  # capabilities came later (PROTOCOL.md §8)
    peer_id: bytes = attrs.field(validator=peer_id_bytes)
    listen_port: int = attrs.field(default=0, validator=u16)  # 0: this client serves nothing
    protocol_version: int = attrs.field(default=PROTOCOL_VERSION, validator=int_in(0, 255))
    agent: str = attrs.field(default="", validator=text_of(64))
    #: What the client offers: every optional feature it speaks, with its highest version.
    capabilities: Capabilities = attrs.field(default=(), converter=capabilities_converter, validator=capabilities_validator)
    #: Capability identity (PROTOCOL.md §8.6): a fresh challenge for the server to sign.
    challenge: bytes = attrs.field(default=b"", validator=empty_or_bytes_of(CHALLENGE_BYTES))


@attrs.frozen
class Welcome(Record):
    """Server -> client, the reply to HELLO."""

    OPCODE: ClassVar[Opcode] = Opcode.WELCOME
    REQUIRED: ClassVar[int] = 6  # capabilities came later (PROTOCOL.md §8)
    peer_id: bytes = attrs.field(validator=peer_id_bytes)
    heartbeat_interval: float = attrs.field(default=0.0, validator=seconds)  # 0: no heartbeats wanted
    observed_host: str = attrs.field(default="127.0.0.1", validator=ip_address_text)
    observed_port: int = attrs.field(default=0, validator=u16)
    protocol_version: int = attrs.field(default=PROTOCOL_VERSION, validator=int_in(0, 255))
    agent: str = attrs.field(default="", validator=text_of(64))  # software and a label, for logs
    #: The agreement: what both sides use on this connection (common/capabilities.py).
    capabilities: Capabilities = attrs.field(default=(), converter=capabilities_converter, validator=capabilities_validator)
    #: Capability identity (PROTOCOL.md §8.6): the server's challenge for the client, its public key, its proof over HELLO's challenge.
    challenge: bytes = attrs.field(default=b"", validator=empty_or_bytes_of(CHALLENGE_BYTES))
    public_key: bytes = attrs.field(default=b"", validator=empty_or_bytes_of(PUBLIC_KEY_BYTES))
    proof: bytes = attrs.field(default=b"", validator=empty_or_bytes_of(PROOF_BYTES))


@attrs.frozen
class Register(Record):
    """->T: become a live peer serving chunks on ``listen_port`` at the address the tracker sees."""

    OPCODE: ClassVar[Opcode] = Opcode.REGISTER
    REQUIRED: ClassVar[int] = 1  # http_port came later (PROTOCOL.md §8.10)
    listen_port: int = attrs.field(validator=port_number)
    #: Capability gateway (PROTOCOL.md §8.10): the port of the peer's HTTP gateway; 0: none (and then left out).
    http_port: int = attrs.field(default=0, validator=u16)


@attrs.frozen
class Deregister(Record):
    """->T: leave the swarm; the tracker forgets the peer and its replicas."""

    OPCODE: ClassVar[Opcode] = Opcode.DEREGISTER


@attrs.frozen
class Heartbeat(Record):
    """->T: still alive; sent every ``heartbeat_interval`` seconds of WELCOME."""

    OPCODE: ClassVar[Opcode] = Opcode.HEARTBEAT


@attrs.frozen
class Ok(Record):
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
class Published(Record):
    """T->: the manifest is stored (durably) and listed under ``file_id``."""

    OPCODE: ClassVar[Opcode] = Opcode.PUBLISHED
    file_id: bytes = attrs.field(validator=file_id_bytes)


@attrs.frozen
class Announce(Record):
    """->T: the sender holds (verified) the chunks in ``ranges`` of ``file_id``."""

    OPCODE: ClassVar[Opcode] = Opcode.ANNOUNCE
    file_id: bytes = attrs.field(validator=file_id_bytes)
    ranges: Ranges = attrs.field(converter=pairs_converter, validator=chunk_ranges)


@attrs.frozen
class Withdraw(Record):
    """->T: the sender no longer serves the chunks in ``ranges`` of ``file_id`` (capability ``withdraw``, PROTOCOL.md §8.5)."""

    OPCODE: ClassVar[Opcode] = Opcode.WITHDRAW
    file_id: bytes = attrs.field(validator=file_id_bytes)
    ranges: Ranges = attrs.field(converter=pairs_converter, validator=chunk_ranges)


@attrs.frozen
class GetManifest(Record):
    """->T: ask for the manifest of ``file_id``."""

    OPCODE: ClassVar[Opcode] = Opcode.GET_MANIFEST
    file_id: bytes = attrs.field(validator=file_id_bytes)


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
class WhoHas(Record):
    """->T: who holds chunks of ``file_id``? At most ``max_peers`` holders come back."""

    OPCODE: ClassVar[Opcode] = Opcode.WHO_HAS
    file_id: bytes = attrs.field(validator=file_id_bytes)
    max_peers: int = attrs.field(default=50, validator=int_in(1, MAX_HOLDERS))


@attrs.frozen
class Holder(Record):
    """One holder in HOLDERS: where it serves and a bitfield of its chunks (MSB first)."""

    peer_id: bytes = attrs.field(validator=peer_id_bytes)
    host: str = attrs.field(validator=ip_address_text)
    port: int = attrs.field(validator=port_number)
    bitfield: bytes = attrs.field(validator=attrs.validators.and_(attrs.validators.instance_of(bytes), attrs.validators.max_len(MAX_CHUNKS // 8)))


@attrs.frozen
class Holders:
    """T->: holders of ``file_id`` (the asker excluded), chosen at random when there are more."""

    OPCODE: ClassVar[Opcode] = Opcode.HOLDERS
    file_id: bytes = attrs.field(validator=file_id_bytes)
    holders: tuple[Holder, ...] = attrs.field(converter=to_tuple, validator=tuple_of(Holder, MAX_HOLDERS))

    def to_fields(self) -> list[Any]:
        return [self.file_id, [h.to_fields() for h in self.holders]]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> Holders:
        file_id, holders = at_least(cls, fields, 2)
        return cls(file_id, tuple(Holder.from_fields(as_tuple(h)) for h in as_tuple(holders)))


@attrs.frozen
class ListFiles(Record):
    """->T: files whose name contains ``pattern`` (case-insensitive; empty: all), at most ``limit``."""

    OPCODE: ClassVar[Opcode] = Opcode.LIST_FILES
    pattern: str = attrs.field(default="", validator=text_of(255))
    limit: int = attrs.field(default=1000, validator=int_in(1, MAX_LIST))


@attrs.frozen
class FileEntry(Record):
    """One file in FILE_LIST."""

    file_id: bytes = attrs.field(validator=file_id_bytes)
    name: str = attrs.field(validator=text_of(1024))
    size: int = attrs.field(validator=int_in(0, 2**63 - 1))
    chunk_size: int = attrs.field(validator=u32)
    chunk_count: int = attrs.field(validator=int_in(0, MAX_CHUNKS))
    holders: int = attrs.field(validator=u32)  # live peers holding at least one chunk
    complete_copies: int = attrs.field(validator=u32)  # live peers holding every chunk


@attrs.frozen
class FileList:
    """T->: the files that matched LIST_FILES or LOOKUP, newest first.

    ``more``: how many more files matched than the list holds (capability
    ``lookup``, PROTOCOL.md §8.9; on the wire only when not 0).
    """

    OPCODE: ClassVar[Opcode] = Opcode.FILE_LIST
    REQUIRED: ClassVar[int] = 1  # more came later (PROTOCOL.md §8.9)
    entries: tuple[FileEntry, ...] = attrs.field(converter=to_tuple, validator=tuple_of(FileEntry, MAX_LIST))
    more: int = attrs.field(default=0, validator=u32)

    def to_fields(self) -> list[Any]:
        entries = [e.to_fields() for e in self.entries]
        return [entries, self.more] if self.more else [entries]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> FileList:
        (entries,) = at_least(cls, fields, 1)
        more = fields[1] if len(fields) > 1 else 0
        return cls(tuple(FileEntry.from_fields(as_tuple(e)) for e in as_tuple(entries)), more)


@attrs.frozen
class Stats(Record):
    """->T: ask for the tracker's counters."""

    OPCODE: ClassVar[Opcode] = Opcode.STATS


def _counters_converter(value: object) -> object:
    if isinstance(value, Mapping):
        return tuple(sorted(value.items()))
    return pairs_converter(value)


def _counters(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or len(value) > 256:
        raise ValidationError("counters must be at most 256 name/value pairs")
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and len(item[0]) <= 64
                and type(item[1]) in (int, float)):
            raise ValidationError("counters must be [name, number] pairs")


@attrs.frozen
class StatsReply(Record):
    """T->: named counters (peers, files, replicas, connections, requests ...)."""

    OPCODE: ClassVar[Opcode] = Opcode.STATS_REPLY
    counters: tuple[tuple[str, int | float], ...] = attrs.field(converter=_counters_converter, validator=_counters)

    def as_dict(self) -> dict[str, int | float]:
        return dict(self.counters)


@attrs.frozen
class Error(Record):
    """Either way: a typed error. From a server it answers the last request, or precedes a close."""

    OPCODE: ClassVar[Opcode] = Opcode.ERROR
    REQUIRED: ClassVar[int] = 2  # sequence came later (PROTOCOL.md §8.11)
    code: int = attrs.field(validator=u16)
    message: str = attrs.field(default="", validator=text_of(MAX_TEXT))
    #: The collection version the error names (PROTOCOL.md §8.11: the current one for COLLECTION_CONFLICT, the
    #: oldest kept for VERSION_PRUNED), so that no client reads it out of ``message``; 0 (then left out): none.
    sequence: int = attrs.field(default=0, validator=int_in(0, 2**63 - 1))

    @property
    def code_name(self) -> str:
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"code {self.code}"


# ---------------------------------------------------------------------------
# Manifests inside messages
# ---------------------------------------------------------------------------
def _manifest_fields(manifest: Manifest) -> list[Any]:
    return list(manifest.record())


def _manifest_from_fields(fields: tuple[Any, ...]) -> Manifest:
    return Manifest.from_record(at_least(Manifest, fields, RECORD_FIELDS))


Message = (
    Hello | Welcome | Register | Deregister | Heartbeat | Ok | Publish | Published | Announce | GetManifest
    | ManifestReply | WhoHas | Holders | ListFiles | FileList | Stats | StatsReply | RequestChunk | ChunkData
    | ChunkError | CancelChunk | Error | Withdraw | Identify | Unpublish | SwarmChallenge | SwarmProof | Lookup
    | PublishCollection | GetCollection | WatchCollection | CollectionReply
    | ListTorrents | TorrentList
)

#: Opcode -> message class, for the decoder.
MESSAGE_TYPES: Final[dict[Opcode, Any]] = {
    cls.OPCODE: cls
    for cls in (
        Hello, Welcome, Register, Deregister, Heartbeat, Ok, Publish, Published, Announce, GetManifest,
        ManifestReply, WhoHas, Holders, ListFiles, FileList, Stats, StatsReply, RequestChunk, ChunkData,
        ChunkError, CancelChunk, Error, Withdraw, Identify, Unpublish, SwarmChallenge, SwarmProof, Lookup,
        PublishCollection, GetCollection, WatchCollection, CollectionReply,
        ListTorrents, TorrentList,
    )
}
assert set(MESSAGE_TYPES) == set(Opcode), "every opcode needs a message class"
