"""Files fetched from the swarm on demand, for the gateway: one download per file, however many requests wait on it.

A request for a file this peer does not hold starts :meth:`peer.node.Peer.download`
of it into the gateway's folder (or joins the one under way), in the
gateway's nursery, so the download goes on when the client leaves: the file is
kept, and served and seeded like any other once complete. Its chunks are on
disk, verified, in the library's ``HeldFile`` as they arrive; requests read
them from there (:func:`peer.gateway.body.send_span`), woken by the
download's progress.
"""

from __future__ import annotations

import logging
import pathlib

import attrs
import trio

from common.errors import ChunkswarmError, StorageError
from common.manifest import Manifest
from peer.node import Peer
from peer.storage.library import HeldFile

__all__ = ["Fetch", "Fetches"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class Fetch:
    """One download under way for the gateway; also its progress sink (``peer.progress.ProgressSink``)."""

    peer: Peer
    file_id: bytes
    #: Set when the download ended; ``error`` says why, if it failed.
    done: trio.Event = attrs.field(factory=trio.Event)
    error: ChunkswarmError | None = None
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)

    def held(self) -> HeldFile | None:
        """The library's entry of the file (its part file while downloading), if there is one yet."""
        held = self.peer.library.get(self.file_id)
        return None if held is None or held.withdrawn else held

    async def wait_for(self, index: int) -> int:
        """Return once chunk ``index`` is on disk and verified, with how many chunks from it are; raise if it never will be."""
        while True:
            held = self.held()
            if held is not None and index in held.have:
                count, have, end = 1, held.have, held.manifest.chunk_count
                while index + count < end and index + count in have:
                    count += 1
                return count
            if self.done.is_set():
                raise self.error or StorageError(f"chunk {index + 1} is no longer held: the download ended without it")
            changed = self._changed
            await changed.wait()

    def wake(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    # -- peer.progress.ProgressSink -------------------------------------------------
    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        self.wake()

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self.wake()

    def finished(self) -> None:
        self.wake()

    def peers(self, count: int) -> None:
        pass

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        pass


@attrs.define(eq=False)
class Fetches:
    """The gateway's downloads under way, by file id; they run in ``nursery`` (the gateway's)."""

    peer: Peer
    folder: pathlib.Path
    nursery: trio.Nursery
    _running: dict[bytes, Fetch] = attrs.field(init=False, factory=dict)

    def fetch(self, manifest: Manifest) -> Fetch:
        """The download of ``manifest``'s file: the one under way, or a new one started now."""
        fetch = self._running.get(manifest.file_id)
        if fetch is None:
            fetch = self._running[manifest.file_id] = Fetch(self.peer, manifest.file_id)
            self.nursery.start_soon(self._run, fetch, manifest)
        return fetch

    async def _run(self, fetch: Fetch, manifest: Manifest) -> None:
        logger.info("%s: fetching %s (%s) from the swarm for the gateway into %s", self.peer.name, manifest.name, manifest.hex_id[:16], self.folder)
        try:
            result = await self.peer.download(manifest.hex_id, self.folder, progress=fetch)
        except (ChunkswarmError, OSError) as exc:  # an OSError: the gateway's folder cannot be written, say
            fetch.error = exc if isinstance(exc, ChunkswarmError) else StorageError(f"{self.folder}: {exc.strerror or exc}")
            logger.warning("%s: fetching %s for the gateway failed: %s", self.peer.name, manifest.name, exc)
        else:
            logger.info("%s: fetched %s for the gateway: %s; serving it", self.peer.name, manifest.name, result.path)
        finally:
            del self._running[manifest.file_id]
            fetch.done.set()
            fetch.wake()
