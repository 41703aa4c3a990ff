"""The file a download fills, on disk: opened (its resume state re-verified), written chunk by chunk and read back, checked once more, moved into place.

It is served from the start: its :class:`~peer.storage.library.HeldFile` is
in the library while the download goes on, so other downloaders get each
chunk as soon as it is verified, and once placed it is served from its final
path. The blocking work runs in worker threads, twice as many as
``io_threads`` where chunks are checked in bulk: while half wait for the
device (reads past the page cache are not read ahead), the other half hash.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Awaitable, Callable

import attrs
import trio

from common.chunkset import ChunkSet
from common.errors import IntegrityError, StorageError
from common.manifest import Manifest
from common.wording import plural
from peer.config import PeerConfig
from peer.storage.chunk_io import Buffer, direct_aligned, hash_chunks, verify_and_write
from peer.storage.download_lock import DownloadLock
from peer.storage.library import HeldFile, Library, open_published
from peer.storage.part_file import PartFile, place_file, same_content
from peer.storage.read_back import ReadBack
from peer.tasks import open_nursery

__all__ = ["DownloadFile"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class DownloadFile:
    """``manifest``'s file at ``final_path``, filled through its part file; see the module docstring.

    ``release`` gets each received chunk's bytes back once they are no longer
    needed (a receive-buffer pool's ``give_back``).
    """

    manifest: Manifest
    final_path: pathlib.Path
    library: Library
    config: PeerConfig
    release: Callable[[Buffer], None]
    #: What the part file holds, verified; in the library from :meth:`open` on.
    held: HeldFile = attrs.field(init=False)
    #: True if :meth:`write` keeps a chunk's bytes until its read-back (then ``release`` gets them).
    keeps_data: bool = attrs.field(init=False, default=False)
    _part: PartFile = attrs.field(init=False)
    _read_back: ReadBack = attrs.field(init=False)
    _lock: DownloadLock = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._part = PartFile(self.manifest, self.final_path, direct_io=self.config.direct_io)
        self._lock = DownloadLock(self.final_path)

    def has_part_file(self) -> bool:
        """True if an earlier download left a part file to resume."""
        return self._part.path.exists()

    async def lock(self) -> None:
        """Take ``NAME.part.lock`` (:class:`AlreadyDownloading` if another download holds it); creates the output folder."""
        await trio.to_thread.run_sync(self._lock.acquire)

    def unlock(self) -> None:
        """Let go of the lock and remove its file (quick, and safe to call when cancelled)."""
        self._lock.release()

    async def in_place(self, *, force: bool) -> bool:
        """True if ``final_path`` already holds this file (it is served from there then).

        Another file in the way is a :class:`StorageError`, unless ``force``.
        """
        final = self.final_path
        if not final.exists():
            return False
        if await trio.to_thread.run_sync(same_content, final, self.manifest):
            self._serve_final()
            return True
        if not force:
            raise StorageError(f"{final} already exists with other content (use --force to overwrite it)")
        return False

    async def open(self, *, force: bool) -> list[int]:
        """Open (or resume) the part file and serve it; the chunks already there, hashed again.

        A part file that is not ours is a :class:`StorageError` unless ``force`` (:meth:`PartFile.open`).
        """
        manifest = self.manifest
        claimed = await trio.to_thread.run_sync(lambda: self._part.open(force=force))
        resumed = await self._verify_on_disk(claimed) if claimed else []
        if claimed:
            lost = len(claimed) - len(resumed)
            logger.info("resuming %s: %d of %s already verified%s", manifest.name, len(resumed), plural(manifest.chunk_count, "chunk"),
                        f" ({plural(lost, 'listed chunk')} failed re-verification)" if lost else "")
        part = self._part
        self.held = HeldFile(manifest, part.path, part.fd, ChunkSet.from_indexes(manifest.chunk_count, resumed), direct_fd=part.direct_fd)
        part.fd = part.direct_fd = -1  # the library's HeldFile owns the descriptors now
        self._read_back = ReadBack(manifest, self.held.fd, self.config.read_back_window, self.held.direct_fd, self.config.cache_window, self.release,
                                   verify=self.config.verify_writes)  # fmt: skip
        self.keeps_data = self._read_back.keeps_data
        self.library.add(self.held)
        return resumed

    def write(self, index: int, data: Buffer) -> list[int]:
        """Verify and write chunk ``index`` (in a worker thread); the older chunks that failed their read-back.

        :class:`IntegrityError` if ``data`` is not the chunk (nothing written), :class:`StorageError` if the write fails.
        """
        held = self.held
        fd = held.direct_fd if held.direct_fd >= 0 and direct_aligned(self.manifest, index) else held.fd
        verify_and_write(self.manifest, fd, index, data)
        return self._read_back.wrote(index, data)

    async def save_state(self) -> None:
        """Record the chunks held (only chunks whose ``pwrite`` has returned are) for a resume."""
        await trio.to_thread.run_sync(self._part.save_state, self.held.have.copy())

    async def finish(self, *, force: bool) -> None:
        """Check that every chunk on disk matches the manifest, then move the file into place and serve it from there.

        Chunks resumed were hashed from disk when the download started, and
        the others were hashed before their write; with ``verify_writes`` they
        were read back as the download went on (:class:`ReadBack`), and only
        the last few are left to read back here. Chunks that fail are no
        longer held, and the download fails with :class:`IntegrityError`; so
        does a part file whose size is no longer the file's (cut or extended
        behind the download's back: a check that costs one ``fstat``).
        """
        manifest = self.manifest
        checking = trio.current_time()
        bad: list[int] = []

        async def one(part: int, parts: int) -> None:
            bad.extend(await trio.to_thread.run_sync(self._read_back.finish, part, parts))

        if self.config.verify_writes:
            await self._in_parallel(one)
        self._read_back.close()
        logger.debug("%s: final read-back of %s took %.2f s", self.config.name, manifest.name, trio.current_time() - checking)
        size = os.fstat(self.held.fd).st_size
        if size != manifest.size:
            raise IntegrityError(f"{manifest.name}: the part file {self._part.path} is {size} bytes, not {manifest.size}: changed behind the download; run get again")
        if bad:
            for index in bad:
                self.held.have.discard(index)
            raise IntegrityError(f"{manifest.name}: {len(bad)} chunks changed on disk after verification; run get again")
        await trio.to_thread.run_sync(lambda: place_file(self._part.path, self.final_path, manifest, force=force))
        self._part.discard_state()
        self._serve_final()

    async def abandon(self) -> None:
        """The download failed or was cancelled: stop serving the part file, and keep its resume state (bounded, shielded)."""
        self.library.remove(self.manifest.file_id)
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.shutdown_timeout):
            await self.save_state()

    async def _verify_on_disk(self, indexes: list[int]) -> list[int]:
        """Hash ``indexes`` of the part file in worker threads (in parallel); the ones that match."""
        fd, direct_fd = self._part.fd, self._part.direct_fd
        good: list[int] = []

        async def one(part: int, parts: int) -> None:
            good.extend(await trio.to_thread.run_sync(hash_chunks, self.manifest, fd, indexes[part::parts], direct_fd))

        await self._in_parallel(one)
        return sorted(good)

    async def _in_parallel(self, job: Callable[[int, int], Awaitable[None]]) -> None:
        parts = max(1, 2 * self.config.io_threads)  # see the module docstring
        async with open_nursery() as nursery:
            for part in range(parts):
                nursery.start_soon(job, part, parts)

    def _serve_final(self) -> None:
        final = self.final_path
        held = self.library.get(self.manifest.file_id)
        st = os.stat(final)
        if held is None or held.path != self._part.path:
            self.library.add(open_published(final, self.manifest, (st.st_size, st.st_mtime_ns)))
            return
        held.path = final
        held.signature = (st.st_size, st.st_mtime_ns)
