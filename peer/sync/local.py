"""This node's side of a synced folder: what changed on disk since the last scan, hashed, recorded and served.

A scan (``peer/sync/scan.py``) lists every file with its stat; only files
whose size, mtime, mode or inode differ from the index are read and hashed,
in batches per worker-thread call. A changed file gets this node's bump in
its version vector (:func:`common.sync_merge.local_change`); a file whose
content and mode are unchanged (touched, say) only has its stat updated; a
file gone from disk becomes a tombstone. Every file of the folder is hashed
and served (the library) through a descriptor opened beneath the folder
(``peer/sync/beneath.py``: no link followed, so nothing outside it is read),
and new file ids are published to the tracker in one pipelined batch: a collection version may only name files the tracker lists.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import attrs
import trio

from common.chunkset import ChunkSet
from common.errors import ChunkswarmError, StorageError
from common.manifest import Manifest, sha256
from common.messages import Announce, Error, Message, Publish
from common.sync_merge import local_change, local_deletion
from peer.node import Peer
from peer.storage.library import HeldFile
from peer.storage.manifest_cache import ManifestCache
from peer.sync.beneath import Folders, Root, open_file
from peer.sync.fetch import SMALL_FILE, sync_chunk_size
from peer.sync.fsops import Stat
from peer.sync.index import Index
from peer.sync.scan import holds_any, scan_folder, scan_paths
from peer.tasks import open_nursery

__all__ = ["LocalSide", "single_chunk_manifest"]

logger = logging.getLogger(__name__)

#: Files hashed per worker-thread call (or fewer, up to this many bytes).
_HASH_BATCH = 256
_HASH_BATCH_BYTES = 64 * 1024 * 1024
#: PUBLISH + ANNOUNCE pairs per pipelined batch to the tracker.
_PUBLISH_BATCH = 2000


def single_chunk_manifest(path: str, size: int, file_id: bytes) -> Manifest:
    """The manifest of a file of one chunk: its id is its content's SHA-256 (``common/manifest.py``).

    An empty file has no chunk at all; its id, the Merkle root of no hashes, is SHA-256 of nothing too."""
    return Manifest.from_hashes(path.rpartition("/")[2], size, sync_chunk_size(size), [file_id] if size else [])


def _hash_one(cache: ManifestCache, folders: Folders, path: str, stat: Stat) -> tuple[Manifest | None, int | None]:
    """The manifest of ``path`` if it is still ``stat`` after hashing, and the descriptor it was hashed from, to serve
    it from (opened here, in the worker thread: 10,000 opens on the event loop each handed the GIL to this thread
    and waited to get it back); (None, None) if it changed (the next scan sees it)."""
    try:
        fd = open_file(folders, path)
    except (OSError, StorageError) as exc:
        logger.info("%s: not hashed now (%s); the next scan tries again", path, exc)
        return None, None
    manifest: Manifest | None = None
    try:
        if stat.size <= SMALL_FILE:
            # Sized to the file: a read of SMALL_FILE + 1 allocates 1 MiB per file (10,000 files of 10 KB hashed 5x slower).
            data = os.pread(fd, stat.size + 1, 0)
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) == (stat.size, stat.mtime_ns) and len(data) == stat.size:
                manifest = single_chunk_manifest(path, stat.size, sha256(data))
        else:
            hashed, signature, _cached = cache.manifest_of_open(fd, folders.root.path / path, sync_chunk_size(stat.size))
            if signature == (stat.size, stat.mtime_ns):
                manifest = hashed
    except (OSError, StorageError) as exc:
        logger.info("%s: not hashed now (%s); the next scan tries again", path, exc)
    if manifest is None:
        os.close(fd)
        return None, None
    return manifest, fd


def _batches(changed: list[tuple[str, Stat]]) -> list[list[tuple[str, Stat]]]:
    out: list[list[tuple[str, Stat]]] = []
    batch: list[tuple[str, Stat]] = []
    size = 0
    for item in changed:
        batch.append(item)
        size += item[1].size
        if len(batch) >= _HASH_BATCH or size >= _HASH_BATCH_BYTES:
            out.append(batch)
            batch, size = [], 0
    if batch:
        out.append(batch)
    return out


def _hash_batch(cache: ManifestCache, root: Root, batch: list[tuple[str, Stat]]) -> list[tuple[Manifest | None, int | None]]:
    with Folders(root) as folders:  # each folder opened once for the batch
        return [_hash_one(cache, folders, path, stat) for path, stat in batch]


def _open_batch(root: Root, batch: list[tuple[str, Stat]]) -> list[int | None]:
    """A descriptor to serve each file of ``batch`` from, if it is still its stat; None otherwise (the next scan sees why)."""
    fds: list[int | None] = []
    with Folders(root) as folders:  # each folder opened once for the batch
        for path, stat in batch:
            try:
                fd = open_file(folders, path)
            except (OSError, StorageError) as exc:
                logger.info("%s: cannot serve it: %s", path, exc)
                fds.append(None)
                continue
            try:
                after = os.fstat(fd)
            except OSError:
                after = None
            if after is None or (after.st_size, after.st_mtime_ns) != (stat.size, stat.mtime_ns):
                os.close(fd)
                fds.append(None)
            else:
                fds.append(fd)
    return fds


T = TypeVar("T")


def _checked(folder: Root, scan: Callable[..., T], *args: object) -> T:
    folder.check_same()  # (a folder replaced under the path lists as empty: everything deleted)
    return scan(*args)


@attrs.define(eq=False)
class LocalSide:
    """Scans, hashes, records and serves this node's files of the folder at ``root``."""

    peer: Peer
    root: pathlib.Path
    index: Index
    me: bytes
    cache: ManifestCache
    #: Problems of the last scan already told (each is logged once).
    told: set[str] = attrs.field(factory=set)
    #: File ids published to the tracker by this run (a new tracker connection publishes the library anyway).
    published: set[bytes] = attrs.field(factory=set)
    #: False until the first scan, which serves (and publishes) the files unchanged since the last run too.
    started: bool = False
    #: Whether the last scan stopped at its limit with changed files left to hash.
    more: bool = False
    #: The folder held open: every file is opened beneath it.
    folder: Root = attrs.field(init=False, default=attrs.Factory(lambda self: Root(self.root), takes_self=True))
    #: When ``more``: the changed files of that scan's listing not hashed yet, and its paths gone, which the
    #: next scan takes up without listing the folder again (unless :meth:`stale` said the folder changed since).
    _rest: list[tuple[str, Stat]] | None = None
    _gone: list[tuple[str, Stat | None]] = attrs.field(factory=list)
    #: The paths changed since the last listing, as the watcher reported them, which the next scan looks at
    #: alone; unless ``_full``: a change not of those paths only (a rescan, a listing in steps cut short).
    _hint: set[str] = attrs.field(factory=set)
    _full: bool = False
    #: Paths listed as changed but not hashed (an error opening or reading them): a scan of events looks at them
    #: again, as a listing of the whole folder would (their stat still differs from the index's).
    _retry: set[str] = attrs.field(factory=set)
    #: Files as the index records them that could not be opened to be served (a restart's unchanged files, an
    #: error such as EMFILE): the next scan hashes them again, which serves them.
    _unserved: set[str] = attrs.field(factory=set)

    def stale(self, paths: Iterable[str] | None = None) -> None:
        """The folder changed since the last listing (at ``paths`` if given: an event): the next scan lists it again.

        With ``paths``, the next scan looks at those alone (Syncthing scans the folders that changed):
        a folder of 10,000 files with one edited is one ``stat``, not 10,000.
        """
        if paths is None or self._rest is not None:
            self._full = True
        else:
            self._hint.update(paths)
        self._rest = None

    async def scan(self, limit: int | None = None) -> int:
        """Record what changed on disk since the last scan; the number of paths changed.

        With ``limit``, it stops hashing once about that many files have changed (``more`` is then
        True): the engine publishes a version of those, so other nodes start fetching, and scans on.
        """
        index = self.index
        manifests: list[Manifest] = []
        files: dict[str, Stat] = {}
        rest, self._rest = self._rest, None
        if rest is not None and not self._hint and not self._full:  # the rest of the last listing: each stat checked as it is hashed
            changed, gone = rest, self._gone
        else:
            # Events since that listing (stale() during the scan that made it, before it kept this rest) are not its
            # files' only changes: the rest is in no index yet, so the folder is listed whole, not those paths alone.
            self._full = self._full or rest is not None
            hint, full, self._hint, self._full = self._hint | self._retry | self._unserved, self._full, set(), False  # later events: the next scan's
            self._retry = set()
            listed = await self._list_some(hint) if hint and not full and self.started else None
            files, changed, gone = listed if listed is not None else await self._list()
        if not self.started:  # unchanged since the last run: served again, hashed only if large (then cached)
            self.started = True
            unchanged: list[tuple[str, Stat]] = []
            for path, stat in files.items():
                entry = index.entries.get(path)
                if entry is None or entry.deleted or index.stats.get(path) != stat:
                    continue
                if entry.size <= SMALL_FILE:
                    unchanged.append((path, stat))
                else:
                    changed.append((path, stat))
            manifests = await self._serve_unchanged(unchanged)
        count = 0
        hashed = 0
        async with open_nursery() as nursery:
            # Each batch is published to the tracker while the next one is hashed.
            nursery.start_soon(self.publish_files, manifests)
            batches = _batches(changed)
            for at, batch in enumerate(batches):
                results = await trio.to_thread.run_sync(_hash_batch, self.cache, self.folder, batch)
                fresh: list[Manifest] = []
                for (path, stat), (manifest, fd) in zip(batch, results, strict=True):
                    if manifest is None or fd is None:
                        self._retry.add(path)  # (changed meanwhile, or an error: "the next scan tries again")
                        continue
                    previous = index.entries.get(path)
                    if previous is not None and not previous.deleted and previous.file_id == manifest.file_id and previous.mode == stat.mode:
                        index.stats[path] = stat  # touched, moved back and forth ...: the same file
                    else:
                        entry = local_change(previous, path, size=stat.size, file_id=manifest.file_id, mode=stat.mode,
                                             mtime_ns=stat.mtime_ns, me=self.me)  # fmt: skip
                        index.record(entry, stat, dirty=True)
                        count += 1
                    self._unserved.discard(path)
                    self.serve(path, manifest, stat, fd)
                    fresh.append(manifest)
                hashed += len(fresh)
                nursery.start_soon(self.publish_files, fresh)
                if limit is not None and count >= limit:
                    self.more = True
                    self._rest = [item for later in batches[at + 1 :] for item in later]
                    self._gone = gone
                    break
            else:
                self.more = False
        now = time.time_ns()
        for path, was in gone if not self.more else ():  # at the end: a file renamed is published at its new path first
            if index.entries[path].deleted or index.stats.get(path) != was:
                continue  # written here since the listing (another node's change taken meanwhile)
            index.record(local_deletion(index.entries[path], me=self.me, now_ns=now), None, dirty=True)
            count += 1
        self.unserve_missing()
        logger.debug("scan: %d files hashed", hashed)
        return count

    async def _list(self) -> tuple[dict[str, Stat], list[tuple[str, Stat]], list[tuple[str, Stat | None]]]:
        """The folder listed: its files, those whose stat differs from the index's, and the paths of the index gone from it."""
        found = await trio.to_thread.run_sync(_checked, self.folder, scan_folder, self.root)
        self._tell(found.problems)
        index = self.index
        changed = [(path, stat) for path, stat in found.files.items() if index.stats.get(path) != stat or path not in index.entries
                   or index.entries[path].deleted or path in self._unserved]  # fmt: skip
        gone = [(path, index.stats.get(path)) for path, entry in index.entries.items()
                if not entry.deleted and path not in found.files and not found.hides(path)]  # fmt: skip
        return found.files, changed, gone

    def _tell(self, problems: Iterable[str]) -> None:
        for problem in problems:
            if problem not in self.told:
                self.told.add(problem)
                logger.warning("%s", problem)

    async def _list_some(self, paths: set[str]) -> tuple[dict[str, Stat], list[tuple[str, Stat]], list[tuple[str, Stat | None]]] | None:
        """As :meth:`_list` for ``paths`` alone; None if the whole folder must be listed (a folder among them)."""
        found = await trio.to_thread.run_sync(_checked, self.folder, scan_paths, self.root, paths)
        index = self.index
        # A path with files of the index below it that is no folder now (gone, or a file or link in its place, a
        # tombstone at its name): those files are gone, but only a listing finds them. (A path with a file of the index
        # holds none below it: an edited file costs no look at the index's folders.)
        if found is None or holds_any(index.stats, [path for path in paths if path not in index.stats]):
            return None  # a folder made, moved in, or removed with files of the index in it
        self._tell(found.problems)
        changed = [(path, stat) for path, stat in found.files.items() if index.stats.get(path) != stat or path not in index.entries
                   or index.entries[path].deleted or path in self._unserved]  # fmt: skip
        gone = [(path, index.stats.get(path)) for path in paths if path not in found.files and path in index.entries
                and not index.entries[path].deleted]  # fmt: skip
        return found.files, changed, gone

    async def _serve_unchanged(self, unchanged: list[tuple[str, Stat]]) -> list[Manifest]:
        """Serve the small files unchanged since the last run (their ids are in the index: not read), opened in batches
        in a worker thread as hashed files are; their manifests, to publish."""
        manifests: list[Manifest] = []
        for start in range(0, len(unchanged), _HASH_BATCH):
            batch = unchanged[start : start + _HASH_BATCH]
            known = [single_chunk_manifest(path, self.index.entries[path].size, self.index.entries[path].file_id) for path, _stat in batch]
            fds = await trio.to_thread.run_sync(_open_batch, self.folder, batch)
            for (path, stat), manifest, fd in zip(batch, known, fds, strict=True):
                if fd is None:
                    self._unserved.add(path)  # changed or gone since the listing, or an error: the next scan sees it
                    continue
                self.serve(path, manifest, stat, fd)
                manifests.append(manifest)
        return manifests

    def serve(self, path: str, manifest: Manifest, stat: Stat, fd: int) -> None:
        """Serve ``path``'s file (``manifest``) from ``fd``, a descriptor on it (this takes it), unless its content is served already."""
        library = self.peer.library
        held = library.get(manifest.file_id)
        if held is not None and not held.withdrawn and held.path.exists() and not held.changed():
            os.close(fd)
            return  # served from another path of the folder with the same content
        library.add(HeldFile(manifest, self.root / path, fd, ChunkSet.full(manifest.chunk_count), (stat.size, stat.mtime_ns)))

    def unserve_missing(self) -> None:
        """Stop serving file ids no path of the folder has any more (quietly: the tracker is told by the library)."""
        wanted = {entry.file_id for path, entry in self.index.entries.items() if not entry.deleted and path in self.index.stats}
        for file_id in [fid for fid in self.peer.library.files if fid not in wanted]:
            self.peer.library.remove(file_id)
            self.published.discard(file_id)

    async def publish_files(self, manifests: list[Manifest]) -> None:
        """PUBLISH and ANNOUNCE the files the tracker does not list yet, in pipelined batches."""
        fresh = {m.file_id: m for m in manifests if m.file_id not in self.published}
        if not fresh or not self.peer.connected:
            return
        messages: list[Message] = []
        for manifest in fresh.values():
            messages += [Publish(manifest), Announce(manifest.file_id, ChunkSet.full(manifest.chunk_count).ranges())]
        for start in range(0, len(messages), 2 * _PUBLISH_BATCH):
            batch = messages[start : start + 2 * _PUBLISH_BATCH]
            replies = await self.peer.tracker.request_many(batch)
            for message, reply in zip(batch, replies, strict=True):
                if isinstance(reply, Error):
                    logger.warning("%s: %s refused: %s", self.peer.name, message.OPCODE.name, reply)
        self.published.update(fresh)

    async def announce_held(self, manifests: list[Manifest]) -> None:
        """Tell the tracker this node holds files it took from others: ANNOUNCE only (their publisher sent the PUBLISH)."""
        fresh = {m.file_id: m for m in manifests if m.file_id not in self.published}
        if not fresh or not self.peer.connected:
            return
        held = list(fresh.values())
        unlisted = []
        for start in range(0, len(held), 2 * _PUBLISH_BATCH):
            batch = held[start : start + 2 * _PUBLISH_BATCH]
            try:
                replies = await self.peer.tracker.request_many([Announce(m.file_id, ChunkSet.full(m.chunk_count).ranges()) for m in batch])
            except ChunkswarmError as exc:
                # Run in the background (the engine's nursery): a tracker lost meanwhile must not end the sync.
                # The reconnection announces every file the library holds.
                logger.debug("%s: announcing %d files taken failed (%s); the reconnection announces them", self.peer.name, len(held), exc)
                return
            unlisted += [m for m, reply in zip(batch, replies, strict=True) if isinstance(reply, Error)]
        self.published.update(fresh)
        if unlisted:  # not listed (a new tracker): published then
            self.published.difference_update(m.file_id for m in unlisted)
            await self.publish_files(unlisted)

    def reopen(self, path: str, manifest: Manifest, stat: Stat) -> None:
        """Serve a file just written at ``path`` from there (unless it cannot be opened there now: the next scan sees why)."""
        try:
            fd = self._open(path)
        except (OSError, StorageError) as exc:
            logger.info("%s: cannot serve it: %s", path, exc)
            return
        self.peer.library.add(HeldFile(manifest, self.root / path, fd, ChunkSet.full(manifest.chunk_count), (stat.size, stat.mtime_ns)))

    def _open(self, path: str) -> int:
        """A read descriptor on the file at ``path``, opened beneath the folder (no link followed)."""
        with Folders(self.folder) as folders:
            return open_file(folders, path)
