"""What the tracker's registry (``tracker.registry``) keeps: peers, their replicas, published files, listing rows.

Plain records with no behaviour of their own beyond a few properties: the
registry keeps them consistent (slots, counts, caches) and states the costs.
"""

from __future__ import annotations

import attrs

from common.chunkset import ChunkSet, Ranges
from common.errors import IntegrityError, TrackerError, ValidationError
from common.framing import ErrorCode
from common.identity import short_id
from common.manifest import Manifest, check_publishable_name

__all__ = ["Peer", "Replica", "FileRecord", "FileSummary", "check_manifest", "chunk_mask", "conflict_message"]


class Replica:
    """The chunks of one file that one peer holds.

    ``slot`` is its index in the file's replica list (for O(1) removal) and
    in the file's ``entries``.
    """

    __slots__ = ("peer", "file", "chunks", "slot")

    def __init__(self, peer: Peer, file: FileRecord, chunks: ChunkSet) -> None:
        self.peer = peer
        self.file = file
        self.chunks = chunks
        self.slot = -1

    @property
    def complete(self) -> bool:
        return self.chunks.complete

    def bitfield(self) -> bytes:
        return self.chunks.bitfield()

    def __repr__(self) -> str:
        return f"Replica({self.peer.peer_id.hex()[:8]}, {self.file.manifest.name!r}, {len(self.chunks)}/{self.chunks.count})"


@attrs.define(eq=False)
class Peer:
    """A registered, live peer: serves chunks at ``(host, port)``; ``host`` is what the tracker saw."""

    peer_id: bytes
    host: str
    port: int
    last_seen: float
    #: The token of the connection whose close drops this peer (PROTOCOL.md §8.5: the
    #: connection of its latest REGISTER agreed on ``withdraw``); None: it expires only.
    connection: object | None = None
    #: The node id proven by the connection that registered it (capability identity, PROTOCOL.md §8.6): then
    #: only a connection proving the same key may act as this peer. None: registered without identity.
    node: bytes | None = None
    replicas: dict[bytes, Replica] = attrs.field(factory=dict, repr=False)  # file id -> replica
    #: The port of its HTTP gateway at ``host`` (capability gateway, PROTOCOL.md §8.10); None: none known.
    http_port: int | None = None

    @property
    def name(self) -> str:
        """How logs name it: the short node id when identified, else the start of its peer id."""
        return short_id(self.node) if self.node is not None else self.peer_id.hex()[:16]


@attrs.define(eq=False)
class FileRecord:
    """A published file and its live replicas."""

    manifest: Manifest
    folded_name: str  # for case-insensitive search
    #: Publish order in this registry (larger: newer), for newest-first look-ups.
    seq: int = 0
    replicas: list[Replica] = attrs.field(factory=list, repr=False)
    #: Beside ``replicas``, slot for slot: an opaque cache of each one's wire
    #: encoding, filled by the server, reset to None whenever the replica or its
    #: peer's address changes.
    entries: list[bytes | None] = attrs.field(factory=list, repr=False)
    complete_copies: int = 0
    #: An opaque cache of the manifest's wire encoding, filled by the server.
    manifest_reply: bytes | None = attrs.field(default=None, repr=False)
    #: Every chunk, as a mask: one int object that every complete replica shares (a 1000-chunk mask is 160 bytes).
    full_mask: int = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.full_mask = (1 << self.manifest.chunk_count) - 1

    def shared(self, mask: int) -> int:
        """``mask``, or the one shared :attr:`full_mask` object when it is every chunk."""
        return self.full_mask if mask == self.full_mask else mask


@attrs.frozen
class FileSummary:
    """One row of a listing."""

    manifest: Manifest
    holders: int  # live peers holding at least one chunk
    complete_copies: int  # live peers holding every chunk

    @classmethod
    def of(cls, record: FileRecord) -> FileSummary:
        """The row of ``record``: its manifest and live counts."""
        return cls(record.manifest, len(record.replicas), record.complete_copies)


# -- checks of requests against the records ---------------------------------------
def check_manifest(manifest: Manifest) -> None:
    """Raise ``TrackerError(INVALID_MANIFEST)`` unless ``manifest`` is self-consistent.

    The hash count against size and chunk size is checked when a ``Manifest``
    is built, so a decoded manifest always passes that; the name rules are
    re-checked here (with the stricter rule for new names, :func:`check_publishable_name`); the Merkle root costs one
    SHA-256 per tree node (about 2 per chunk), so callers run this off the
    event loop for large manifests.
    """
    try:
        check_publishable_name(manifest.name)
        manifest.verify()
    except (IntegrityError, ValidationError) as exc:
        raise TrackerError(f"invalid manifest: {exc}", code=ErrorCode.INVALID_MANIFEST) from None


def conflict_message(peer: Peer) -> str:
    if peer.node is not None:
        return f"peer id {peer.peer_id.hex()[:16]} belongs to node {peer.name}: only a connection proving its key may act as it"
    return f"peer id {peer.peer_id.hex()[:16]} is registered from another address"


def chunk_mask(record: FileRecord, ranges: Ranges, what: str) -> int:
    """The bitmask of ``ranges`` over ``record``'s chunks; ``TrackerError(BAD_REQUEST)`` for ranges beyond the file."""
    try:
        return ChunkSet.from_ranges(record.manifest.chunk_count, ranges).mask
    except ValidationError as exc:
        raise TrackerError(f"bad {what} for {record.manifest.name!r}: {exc}", code=ErrorCode.BAD_REQUEST) from None
