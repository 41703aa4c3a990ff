"""Small files of a version not merged yet, fetched ahead into memory while the cycle before it still runs.

A node that publishes many new files does so in versions of growing steps
(``peer/sync/engine.py``): without this, a receiving node fetches the files
of one version only once it has applied the one before, one cycle after the
other, and ends a whole cycle after the last version. Here the new small
files of each version the listener sees are fetched at once (on fewer
connections beside another fetch: a holder's upload slots are few), and
kept in memory by file id, their content verified. Nothing is
written here: the cycle that merges the version takes them
(:meth:`Ahead.take`) and writes them as if it had fetched them, with every
check of ``peer/sync/apply.py`` (a local change is never overwritten, a
conflict is a conflict). What is never taken is dropped once a version at
least as new is merged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import attrs
import trio

from common.collection import CollectionVersion
from common.errors import ChunkswarmError
from peer.node import Peer
from peer.sync.fetch import SMALL_FILE, Deliver, fetch_small_files

__all__ = ["Ahead"]

logger = logging.getLogger(__name__)

#: Connections to each holder per version fetched ahead beside another fetch (a holder serves 8 at once) ...
_CONNECTIONS = 2
#: ... and when nothing else is fetched (as many as a cycle's own fetch).
_ALONE = 6
#: Bytes of contents held at most (a version's files beyond that are fetched by its cycle).
_MAX_BYTES = 256 << 20


@attrs.define(eq=False)
class Ahead:
    """Contents of small files fetched ahead of their version's cycle; see the module docstring."""

    peer: Peer
    #: Verified contents by file id, not taken yet.
    contents: dict[bytes, bytes] = attrs.field(factory=dict)
    #: Bytes in ``contents``, and of the files being fetched ahead.
    held_bytes: int = 0
    fetching_bytes: int = 0
    #: File ids being fetched (ahead, or by the cycle): not asked again.
    asked: set[bytes] = attrs.field(factory=set)
    #: Fetches under way: their file ids, and an event set when they end.
    running: list[tuple[frozenset[bytes], trio.Event]] = attrs.field(factory=list)
    #: The newest version fetched ahead.
    sequence: int = 0
    #: Set (and replaced) when contents arrive or a fetch ends.
    _arrived: trio.Event = attrs.field(factory=trio.Event)

    def start(self, nursery: trio.Nursery, version: CollectionVersion, held: Collection[bytes]) -> None:
        """Fetch the small files of ``version`` that are neither ``held`` here nor asked already, in ``nursery``."""
        wanted: dict[bytes, tuple[int, bytes]] = {}
        budget = _MAX_BYTES - self.held_bytes - self.fetching_bytes
        for entry in version.entries:
            if entry.deleted or not 0 < entry.size <= SMALL_FILE or entry.file_id in held or self.has(entry.file_id) or entry.file_id in wanted:
                continue
            if entry.size > budget:
                break
            budget -= entry.size
            wanted[entry.file_id] = (entry.size, entry.modified_by)
        self.sequence = max(self.sequence, version.sequence)
        if wanted:
            done = trio.Event()
            # Alone, as many connections as a cycle's fetch; beside another fetch, a couple (a holder serves 8 at once).
            connections = _CONNECTIONS if self.asked else _ALONE
            self.asked.update(wanted)
            self.fetching_bytes += sum(size for size, _author in wanted.values())
            self.running.append((frozenset(wanted), done))
            nursery.start_soon(self._fetch, wanted, done, connections)

    async def _fetch(self, wanted: dict[bytes, tuple[int, bytes]], done: trio.Event, connections: int) -> None:
        try:
            await fetch_small_files(self.peer, wanted, self._keep, connections=connections)
        except ChunkswarmError as exc:  # (the cycle fetches what is missing)
            logger.debug("fetching ahead: %s", exc)
        finally:
            self.asked.difference_update(wanted)
            self.fetching_bytes -= sum(size for size, _author in wanted.values())
            self.running = [run for run in self.running if run[1] is not done]
            done.set()
            self._tell()

    async def _keep(self, batch: list[tuple[bytes, bytes]]) -> None:
        for file_id, data in batch:
            if file_id not in self.contents:
                self.contents[file_id] = data
                self.held_bytes += len(data)
        self._tell()

    def _tell(self) -> None:
        self._arrived.set()
        self._arrived = trio.Event()

    def has(self, file_id: bytes) -> bool:
        """True if ``file_id`` was fetched ahead, or is being fetched (ahead or by a cycle)."""
        return file_id in self.contents or file_id in self.asked

    async def take(self, file_ids: Collection[bytes], deliver: Deliver) -> set[bytes]:
        """Hand those of ``file_ids`` fetched ahead to ``deliver`` in batches as they arrive (those on their way waited for); the ids handed.

        While a batch is delivered (written), its ids count as asked: they are in no index yet, and a
        version seen meanwhile would fetch them again.
        """
        wanted, handed = set(file_ids), set()
        while True:
            ready = [(file_id, self.contents.pop(file_id)) for file_id in [f for f in wanted if f in self.contents]]
            if ready:
                ids = {file_id for file_id, _data in ready}
                wanted -= ids
                handed |= ids
                self.held_bytes -= sum(len(data) for _, data in ready)
                self.asked.update(ids)
                try:
                    await deliver(ready)
                finally:
                    self.asked.difference_update(ids)
                continue
            if not any(not ids.isdisjoint(wanted) for ids, _done in self.running):
                return handed
            await self._arrived.wait()

    def merged(self, sequence: int) -> None:
        """A version of ``sequence`` is merged: contents fetched for versions up to it and not taken are not needed."""
        if sequence >= self.sequence and not self.running:
            self.contents.clear()
            self.held_bytes = 0
