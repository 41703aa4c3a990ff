"""What the tracker's registry (``tracker.registry``) keeps: peers, their replicas, published files, listing rows.

Plain records with no behaviour of their own beyond a few properties: the
registry keeps them consistent (slots, counts, caches) and states the costs.
"""

from __future__ import annotations

import attrs

from common.chunkset import ChunkSet
from common.manifest import Manifest

__all__ = ["Peer", "Replica", "FileRecord", "FileSummary"]


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
    replicas: dict[bytes, Replica] = attrs.field(factory=dict, repr=False)  # file id -> replica


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
