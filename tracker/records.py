"""What the tracker's registry (``tracker.registry``) keeps: peers, their replicas, published files, listing rows.

Plain records with no behaviour of their own beyond a few properties: the
registry keeps them consistent (slots, counts, caches) and states the costs.
"""

from __future__ import annotations

from typing import Final

import attrs
import msgpack

from common.chunkset import ChunkSet, Ranges, bitfield_to_mask, mask_to_bitfield
from common.errors import IntegrityError, TrackerError, ValidationError
from common.framing import ErrorCode
from common.identity import short_id
from common.manifest import Manifest, check_publishable_name
from tracker.slotmap import SlotMap

__all__ = ["Peer", "Replica", "FileRecord", "FileSummary", "wire_bits", "bits_mask", "holder_head", "check_manifest", "chunk_mask", "conflict_message"]


def wire_bits(mask: int, count: int) -> bytes:
    """The bitfield of ``mask`` over ``count`` chunks as MessagePack packs it (bin 8/16/32): a ``Holder``'s last field."""
    bitfield = mask_to_bitfield(mask, count)
    size = len(bitfield)
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big") + bitfield
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big") + bitfield
    return b"\xc6" + size.to_bytes(4, "big") + bitfield


def bits_mask(bits: bytes) -> int:
    """The mask of :func:`wire_bits`'s bytes."""
    return bitfield_to_mask(bits[_BIN_HEADER[bits[0]] :])


#: The length of a MessagePack bin header, by its first byte.
_BIN_HEADER: Final = {0xC4: 2, 0xC5: 3, 0xC6: 5}


def holder_head(peer_id: bytes, host: str, port: int) -> bytes:
    """The start of a peer's MessagePack ``Holder`` entry: array header, peer id, host, port (its bitfield follows)."""
    return b"\x94" + msgpack.packb(peer_id, use_bin_type=True) + msgpack.packb(host) + msgpack.packb(port)  # type: ignore[no-any-return]


class Replica:
    """A view of the chunks of one file that one peer holds, as the registry has them now.

    The registry keeps no object per replica (issue 16: 10,000 peers x 100 files
    is a million of them): a file keeps its holders and their chunks in two lists,
    slot for slot, and each peer the slot of each file it holds (``Peer.slots``).
    A view is made on demand and goes stale once the registry changes.
    """

    __slots__ = ("peer", "file", "slot")

    def __init__(self, peer: Peer, file: FileRecord, slot: int) -> None:
        self.peer = peer
        self.file = file
        self.slot = slot

    @property
    def bits(self) -> bytes:
        """Its chunks as a ``Holder``'s bitfield field on the wire (:func:`wire_bits`)."""
        return self.file.parts[2 * self.slot + 1]

    @property
    def mask(self) -> int:
        return bits_mask(self.bits)

    @property
    def chunks(self) -> ChunkSet:
        """A copy of its chunks."""
        return ChunkSet(self.file.manifest.chunk_count, self.mask)

    @property
    def complete(self) -> bool:
        return self.bits is self.file.full_bits

    def bitfield(self) -> bytes:
        return self.chunks.bitfield()

    def __repr__(self) -> str:
        return f"Replica({self.peer.peer_id.hex()[:8]}, {self.file.manifest.name!r}, {len(self.chunks)}/{self.file.manifest.chunk_count})"


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
    #: ``FileRecord.seq`` -> its slot in that file's ``holders`` and ``parts``: the files it holds chunks of.
    slots: SlotMap = attrs.field(factory=SlotMap, repr=False)
    #: The port of its HTTP gateway at ``host`` (capability gateway, PROTOCOL.md §8.10); None: none known.
    http_port: int | None = None
    #: The start of its entries in HOLDERS replies (:func:`holder_head`), shared by every file it holds.
    head: bytes = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.head = holder_head(self.peer_id, self.host, self.port)

    def move(self, host: str, port: int) -> None:
        """It registered again from ``(host, port)``."""
        self.host, self.port = host, port
        self.head = holder_head(self.peer_id, host, port)

    @property
    def name(self) -> str:
        """How logs name it: the short node id when identified, else the start of its peer id."""
        return short_id(self.node) if self.node is not None else self.peer_id.hex()[:16]


@attrs.define(eq=False)
class FileRecord:
    """A published file and its live replicas: who holds it (``holders``) and their HOLDERS entries (``parts``).

    ``parts`` holds two byte strings per slot, each holder's ``head`` then its chunks
    in wire form (:func:`wire_bits`), so a HOLDERS reply is a slice of it joined, with
    nothing to encode or cache per replica; every complete replica shares the one
    ``full_bits``, every slot its peer's one ``head``.
    """

    manifest: Manifest
    folded_name: str  # for case-insensitive search
    #: Publish order in this registry (larger: newer), for newest-first look-ups.
    seq: int = 0
    #: The peers holding chunks of it, in random order (see ``Registry._link``).
    holders: list[Peer] = attrs.field(factory=list, repr=False)
    #: ``parts[2 * slot]`` is ``holders[slot].head``, ``parts[2 * slot + 1]`` its chunks (:func:`wire_bits`).
    parts: list[bytes] = attrs.field(factory=list, repr=False)
    complete_copies: int = 0
    #: An opaque cache of the manifest's wire encoding, filled by the server.
    manifest_reply: bytes | None = attrs.field(default=None, repr=False)
    #: Every chunk, as a mask and as :func:`wire_bits`: the one object every complete replica shares.
    full_mask: int = attrs.field(init=False, repr=False)
    full_bits: bytes = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        count = self.manifest.chunk_count
        self.full_mask = (1 << count) - 1
        self.full_bits = wire_bits(self.full_mask, count)

    def wire(self, mask: int) -> bytes:
        """``mask`` as :func:`wire_bits`, the shared :attr:`full_bits` when it is every chunk."""
        return self.full_bits if mask == self.full_mask else wire_bits(mask, self.manifest.chunk_count)

    @property
    def replicas(self) -> list[Replica]:
        """Views of every replica, slot by slot. O(holders): for pages and tests, not requests."""
        return [Replica(peer, self, slot) for slot, peer in enumerate(self.holders)]


@attrs.frozen
class FileSummary:
    """One row of a listing."""

    manifest: Manifest
    holders: int  # live peers holding at least one chunk
    complete_copies: int  # live peers holding every chunk

    @classmethod
    def of(cls, record: FileRecord) -> FileSummary:
        """The row of ``record``: its manifest and live counts."""
        return cls(record.manifest, len(record.holders), record.complete_copies)


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
