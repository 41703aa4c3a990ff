"""Announcing a download's verified chunks to the tracker, in batches.

A chunk is announced at most ``delay`` after it is verified, many to one
ANNOUNCE, so the tracker hands this peer out for it while the download goes
on (every downloader an uploader). A batch the tracker does not take is not
retried: a reconnection re-announces everything held (``Peer._on_connected``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

from common.chunkset import ChunkSet
from common.errors import ConnectionClosed, PeerTimeout, ProtocolError, TrackerError, TrackerUnavailable
from common.manifest import Manifest
from common.messages import Announce, Ok

if TYPE_CHECKING:
    from peer.download import Tracker

__all__ = ["Announcer"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class Announcer:
    """The chunks of ``manifest`` verified and not announced yet, and the task that announces them."""

    manifest: Manifest
    tracker: Tracker
    #: Chunks are announced at most this late (``PeerConfig.announce_delay``).
    delay: float
    label: str = "peer"
    _pending: ChunkSet = attrs.field(init=False)
    _due: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._pending = ChunkSet(self.manifest.chunk_count)

    def add(self, index: int) -> None:
        self._pending.add(index)
        self._due.set()

    def update(self, chunks: ChunkSet) -> None:
        self._pending.update(chunks)
        self._due.set()

    async def run(self) -> None:
        """Announce each batch ``delay`` after its first chunk, until cancelled."""
        while True:
            await self._due.wait()
            await trio.sleep(self.delay)
            await self.flush()

    async def flush(self) -> None:
        """Announce what is pending now."""
        self._due = trio.Event()
        batch = self._pending
        if not batch.mask:
            return
        self._pending = ChunkSet(self.manifest.chunk_count)
        if not self.tracker.connected:
            # Waiting for the tracker here would hold the end of a download for its whole
            # timeout while the tracker is down; a reconnection re-announces everything held.
            logger.debug("%s: tracker down; %d chunks will be announced on reconnection", self.label, len(batch))
            return
        try:
            await self.tracker.request(Announce(self.manifest.file_id, batch.ranges()), Ok)
        except (TrackerUnavailable, TrackerError, PeerTimeout, ConnectionClosed, ProtocolError) as exc:
            logger.debug("%s: announce failed: %s", self.label, exc)
