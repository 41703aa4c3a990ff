"""Others' changes into this node's folder: a :class:`~common.sync_merge.Plan` carried out, every write atomic and checked.

In this order: conflict losers set aside (renamed to their conflict copy);
files whose content is here already (a rename, a copy, a conflict copy: copied
locally, nothing downloaded); then, at once, tombstones (the file removed if it
is still what the index recorded), small files fetched in bulk
(``peer/sync/fetch.py``) and larger files downloaded by the
:class:`~peer.download.Downloader` into ``.chunkswarm/staging`` and renamed into
place. Every write goes through ``peer/sync/fsops.py``: a path that leads
outside the folder is refused, and a file changed here since the last scan is
not overwritten (:class:`~peer.sync.fsops.ChangedLocally`: the engine rescans,
and the edit meets the remote one as a conflict).

Each path that could not be taken now stays as it was in the index, so the
next cycle tries it again; :meth:`Applier.apply` returns how many.
"""

from __future__ import annotations

import collections
import logging
import os
import pathlib

import attrs
import trio

from common.chunkset import ChunkSet
from common.collection import CollectionVersion, Entry
from common.errors import ChunkswarmError, ValidationError
from common.manifest import Manifest
from common.sync_merge import Plan
from common.sync_rules import STATE_FOLDER
from peer.download import Downloader
from peer.progress import ProgressSink
from peer.storage.library import HeldFile
from peer.sync.ahead import Ahead
from peer.sync.fetch import SMALL_FILE, fetch_small_files
from peer.sync.fsops import ChangedLocally, Stat, copy_atomic, place, remove_batch, set_aside, write_atomic, write_batch
from peer.sync.local import LocalSide, single_chunk_manifest
from peer.tasks import open_nursery

__all__ = ["Applier", "Transfer"]

logger = logging.getLogger(__name__)

#: Large files downloaded at once.
_PARALLEL_DOWNLOADS = 4


@attrs.define(eq=False)
class Transfer:
    """A download in progress, for ``chunkswarm sync status``."""

    path: str
    size: int
    done: int = 0

    # The ProgressSink of a Downloader.
    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        self.done = already_have_bytes

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self.done += nbytes

    def finished(self) -> None:
        self.done = self.size

    def peers(self, count: int) -> None:
        pass

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        pass


@attrs.define(eq=False)
class Applier:
    """Carries out plans for the folder of ``local``; see the module docstring."""

    local: LocalSide
    fsync: bool = True
    #: Downloads in progress, by path.
    transfers: dict[str, Transfer] = attrs.field(factory=dict)
    #: Set when a file changed here under a remote change: the engine rescans.
    changed_locally: bool = False
    #: Manifests of the files taken since the tracker was last told this node holds them.
    taken: list[Manifest] = attrs.field(factory=list)
    #: Where the tracker is told of them, in the background (the engine's): the next cycle need not wait for
    #: 10,000 ANNOUNCE replies to start on the next version. None: told before :meth:`apply` returns.
    nursery: trio.Nursery | None = None
    #: Paths (and their folders) being written or removed in a batch, not recorded in the index yet: the
    #: watcher waits for them (:meth:`settled`) before it compares its events with the index.
    writing: collections.Counter[str] = attrs.field(factory=collections.Counter)
    #: Batches started so far: a check of events that overlapped a new one is made again.
    batches: int = 0
    _written: trio.Event = attrs.field(factory=trio.Event)
    #: Small files of versions not merged yet, fetched ahead (started by :meth:`fetch_ahead`).
    ahead: Ahead = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.ahead = Ahead(self.local.peer)

    async def settled(self, paths: set[str]) -> None:
        """Return once none of ``paths`` (relative) is being written by a batch."""
        while any(path in self.writing for path in paths):
            await self._written.wait()

    def _start_writing(self, paths: list[str]) -> list[str]:
        marked = [folder for path in paths for folder in _with_folders(path)]
        self.writing.update(marked)
        self.batches += 1
        return marked

    def _done_writing(self, marked: list[str]) -> None:
        self.writing.subtract(marked)
        self.writing = +self.writing  # (drops the paths at zero)
        self._written.set()
        self._written = trio.Event()

    @property
    def root(self) -> pathlib.Path:
        return self.local.root

    async def apply(self, plan: Plan) -> int:
        """Carry out ``plan``'s set-asides, takes and drops; the number of paths left for the next cycle."""
        index = self.local.index
        left = 0
        for path, copy_path in plan.set_aside:
            copy = next(entry for entry in plan.publish if entry.path == copy_path)
            try:
                stat = await trio.to_thread.run_sync(set_aside, self.local.folder, path, copy_path, index.stats.get(path))
            except (ChunkswarmError, ValidationError) as exc:
                left += 1
                self._note(path, exc)
                continue
            index.forget(path)
            index.record(copy, stat, dirty=True)
        by_content: dict[bytes, list[Entry]] = {}
        deletions: list[Entry] = []
        for entry in plan.take:
            if entry.deleted:
                deletions.append(entry)  # last: a renamed file's content is copied from its old path first
            elif (held := index.entries.get(entry.path)) is not None and not held.deleted and held.file_id == entry.file_id and entry.path in index.stats:
                index.record(entry, index.stats[entry.path], dirty=False)  # the same content: a new history only
            else:
                by_content.setdefault(entry.file_id, []).append(entry)
        # Content this node has already (a rename, a copy, a conflict copy of its own file) is copied first,
        # before anything fetched overwrites the path it is at; then what is fetched; then the other paths of
        # content just fetched.
        here = index.content_paths()
        small: dict[bytes, tuple[int, bytes]] = {}
        large: list[Entry] = []
        for file_id, entries in by_content.items():
            first = entries[0]
            if first.size == 0 or file_id in here:
                for entry in entries:
                    left += await (self._write(entry, b"") if entry.size == 0 else self._copy(entry, here[file_id][0]))
            elif first.size <= SMALL_FILE:
                small[file_id] = (first.size, first.modified_by)
            else:
                large.append(first)
        results: list[int] = []
        async with open_nursery() as nursery:
            if deletions or plan.drop:
                # Removed while the rest is fetched (nothing fetched is read from a path removed: copies are
                # done), in a worker thread of its own; a folder files are written into is not pruned meanwhile.
                writing = frozenset(entry.path.rpartition("/")[0] for entries in by_content.values() for entry in entries)
                nursery.start_soon(self._remove, deletions, plan.drop, writing, results)
            if large:
                limiter = trio.Semaphore(_PARALLEL_DOWNLOADS)
                for entry in large:
                    nursery.start_soon(self._download, entry, by_content[entry.file_id], limiter, results)
            if small:
                failed = await self._fetch_small(small, by_content)
                left += sum(len(by_content[file_id]) for file_id in failed)
        left += sum(results)
        if large:
            here = index.content_paths()
            for entry in large:
                for other in by_content[entry.file_id][1:]:
                    left += await self._copy(other, here[entry.file_id][0]) if entry.file_id in here else 1
        if self.taken:
            taken, self.taken = self.taken, []
            if self.nursery is not None:
                self.nursery.start_soon(self.local.announce_held, taken)
            else:
                await self.local.announce_held(taken)
        return left

    def fetch_ahead(self, version: CollectionVersion) -> None:
        """Start fetching the small files of ``version`` (not merged yet) that are not here (``peer/sync/ahead.py``)."""
        if self.nursery is not None:
            self.ahead.start(self.nursery, version, self.local.index.content_paths())

    async def _fetch_small(self, small: dict[bytes, tuple[int, bytes]], by_content: dict[bytes, list[Entry]]) -> set[bytes]:
        """The small files fetched (those fetched ahead taken, waited for if on their way); the file ids not had."""
        peer, ahead = self.local.peer, self.ahead

        async def deliver(batch: list[tuple[bytes, bytes]]) -> None:
            await self._write_fetched(batch, by_content)

        mine = {file_id: wanted for file_id, wanted in small.items() if not ahead.has(file_id)}
        failed: set[bytes] = set()

        async def own() -> None:
            ahead.asked.update(mine)  # (not fetched ahead meanwhile for the next version)
            try:
                failed.update(await fetch_small_files(peer, mine, deliver))
            finally:
                ahead.asked.difference_update(mine)

        async with open_nursery() as nursery:
            if mine:
                nursery.start_soon(own)
            # Written as they arrive, beside this cycle's own fetch.
            written = await ahead.take([file_id for file_id in small if file_id not in mine], deliver)
        missed = {file_id: small[file_id] for file_id in small.keys() - mine.keys() - written}
        if missed:  # fetching ahead did not get them
            failed.update(await fetch_small_files(peer, missed, deliver))
        return failed

    def _release(self, path: str) -> None:
        """Stop serving the content at ``path`` from there: it is about to be replaced (the tracker is told)."""
        old = self.local.index.entries.get(path)
        if old is None or old.deleted:
            return
        held = self.local.peer.library.get(old.file_id)
        if held is not None and held.path == self.root / path:
            self.local.peer.library.remove(old.file_id)
            self.local.published.discard(old.file_id)

    def _note(self, path: str, exc: Exception) -> None:
        if isinstance(exc, ChangedLocally):
            self.changed_locally = True
            logger.info("%s", exc)
        else:
            logger.warning("%s: not synced: %s", path, exc)

    async def _remove(self, deletions: list[Entry], drops: tuple[str, ...], keep: frozenset[str], left_out: list[int]) -> None:
        """Tombstones taken and paths dropped, in one worker-thread call; adds to ``left_out`` how many were kept (changed here, or refused)."""
        index = self.local.index
        for entry in deletions:
            self._release(entry.path)
        paths = [entry.path for entry in deletions] + list(drops)
        marked = self._start_writing(paths)
        left = 0
        try:
            results = await trio.to_thread.run_sync(remove_batch, self.local.folder, [(path, index.stats.get(path)) for path in paths], keep)
            for at, (path, exc) in enumerate(zip(paths, results, strict=True)):
                if exc is not None:
                    self._note(path, exc)
                    left += 1
                elif at < len(deletions):
                    index.record(deletions[at], None, dirty=False)
                else:
                    index.forget(path)
        finally:
            self._done_writing(marked)
        left_out.append(left)

    def _expected(self, path: str) -> Stat | None:
        entry = self.local.index.entries.get(path)
        return None if entry is None or entry.deleted else self.local.index.stats.get(path)

    async def _write(self, entry: Entry, data: bytes) -> int:
        self._release(entry.path)
        try:
            stat = await trio.to_thread.run_sync(lambda: write_atomic(self.local.folder, entry.path, data, self._expected(entry.path), mtime_ns=entry.mtime_ns,
                                                                      mode=entry.mode, fsync=self.fsync))  # fmt: skip
        except (ChunkswarmError, ValidationError) as exc:
            self._note(entry.path, exc)
            return 1
        self._taken(entry, stat)
        return 0

    def _taken(self, entry: Entry, stat: Stat) -> None:
        self.local.index.record(entry, stat, dirty=False)
        if entry.size <= SMALL_FILE:
            manifest = single_chunk_manifest(entry.path, entry.size, entry.file_id)
            self.local.reopen(entry.path, manifest, stat)
            self.taken.append(manifest)

    async def _write_fetched(self, batch: list[tuple[bytes, bytes]], by_content: dict[bytes, list[Entry]]) -> None:
        jobs = [(entry, data) for file_id, data in batch for entry in by_content[file_id]]
        for entry, _data in jobs:
            self._release(entry.path)

        def write_all() -> list[tuple[Stat, HeldFile | None] | Exception]:
            # One call for the batch: folders opened once each, all flushed together (see fsops.write_batch).
            written = write_batch(self.local.folder, [(entry.path, data, self._expected(entry.path), entry.mtime_ns, entry.mode)
                                                           for entry, data in jobs], fsync=self.fsync)  # fmt: skip
            out: list[tuple[Stat, HeldFile | None] | Exception] = []
            for (entry, _data), result in zip(jobs, written, strict=True):
                if isinstance(result, Exception):
                    out.append(result)
                    continue
                # Served from the descriptor it was written through: what is served is what was written.
                try:
                    manifest = single_chunk_manifest(entry.path, entry.size, entry.file_id)
                except ValidationError:  # a name a manifest cannot carry (a leading space ...): in place, not served
                    os.close(result.fd)
                    out.append((result.stat, None))
                    continue
                signature = (result.stat.size, result.stat.mtime_ns)
                out.append((result.stat, HeldFile(manifest, self.root / entry.path, result.fd, ChunkSet.full(manifest.chunk_count), signature)))
            return out

        marked = self._start_writing([entry.path for entry, _data in jobs])
        try:
            results = await trio.to_thread.run_sync(write_all)
            for (entry, _data), result in zip(jobs, results, strict=True):
                if isinstance(result, Exception):
                    self._note(entry.path, result)
                    continue
                stat, held = result
                self.local.index.record(entry, stat, dirty=False)
                if held is not None:
                    self.local.peer.library.add(held)
                    self.taken.append(held.manifest)
        finally:
            self._done_writing(marked)

    async def _copy(self, entry: Entry, source_path: str) -> int:
        index = self.local.index
        if source_path != entry.path:
            self._release(entry.path)
        source_stat = index.stats[source_path]

        def copy() -> Stat:
            # The source still the content the index says, before and after (else the next scan sees it).
            return copy_atomic(self.local.folder, source_path, source_stat, entry.path, self._expected(entry.path), mtime_ns=entry.mtime_ns,
                               mode=entry.mode, fsync=self.fsync)  # fmt: skip

        try:
            stat = await trio.to_thread.run_sync(copy)
        except (ChunkswarmError, ValidationError) as exc:
            self._note(entry.path, exc)
            return 1
        held = self.local.peer.library.get(entry.file_id)
        manifest = held.manifest if held is not None else single_chunk_manifest(entry.path, entry.size, entry.file_id) if entry.size <= SMALL_FILE else None
        if manifest is not None:  # served from the copy: the source may be overwritten next (a conflict, a swap)
            self.local.reopen(entry.path, manifest, stat)
        index.record(entry, stat, dirty=False)
        logger.info("%s: copied from %s here (same content), nothing downloaded", entry.path, source_path)
        return 0

    async def _download(self, first: Entry, entries: list[Entry], limiter: trio.Semaphore, results: list[int]) -> None:
        peer = self.local.peer
        staging = self.root / STATE_FOLDER / "staging"
        async with limiter:
            transfer = self.transfers[first.path] = Transfer(first.path, first.size)
            try:
                manifest = await peer.get_manifest(first.file_id)
                await trio.to_thread.run_sync(lambda: staging.mkdir(parents=True, exist_ok=True))
                progress: ProgressSink = transfer
                result = await Downloader(peer.config, manifest, staging, peer.tracker, peer.library, peer.transfers, peer.hello,
                                          peer.peer_id, private=peer.private, save_as=first.file_id.hex(), progress=progress).run()  # fmt: skip
                self._release(first.path)
                staged = peer.library.get(first.file_id)
                if staged is not None:
                    staged.signature = None  # renamed into place next: not a change under our feet (reopened there below)
                stat = await trio.to_thread.run_sync(lambda: place(self.local.folder, result.path, first.path, self._expected(first.path),
                                                                   mtime_ns=first.mtime_ns, mode=first.mode, fsync=self.fsync))  # fmt: skip
            except (ChunkswarmError, ValidationError, OSError) as exc:
                self._note(first.path, exc)
                results.append(len(entries))
                return
            finally:
                self.transfers.pop(first.path, None)
            self.local.index.record(first, stat, dirty=False)
            self.local.reopen(first.path, manifest, stat)
            self.taken.append(manifest)


def _with_folders(path: str) -> list[str]:
    """``path`` and each folder it is in (a folder made for a file written is an event of its own)."""
    out = [path]
    while "/" in path:
        path = path.rpartition("/")[0]
        out.append(path)
    return out
