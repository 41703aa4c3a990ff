"""Seeding folders as a service: what is in them is published, and stays published as they change.

:class:`Seeder` publishes the files under its roots once, then follows the
folders: a new file is published, a changed one is published again (its
older version is no longer served), a removed one is no longer served.
Changes come from the file system's events (the ``watchfiles`` library:
inotify on Linux, FSEvents, ReadDirectoryChangesW, or polling where none
works), and a full rescan every ``rescan_interval`` catches anything the
events missed. Each file is compared by its (size, mtime) signature first,
so an event for an unchanged file costs an ``os.stat``, and a changed file
is hashed once (the manifest cache keeps it for next time).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio

from common.errors import StorageError, ValidationError
from common.manifest import Manifest
from peer.node import Peer
from peer.progress import ProgressSink
from peer.storage.fs import file_signature
from peer.storage.library import expand_paths

__all__ = ["Seeder"]

logger = logging.getLogger(__name__)

#: Files chunkswarm itself writes next to the files it shares: a download's part file, its
#: resume state and lock, and the temporary files of atomic writes (``.NAME.PID.N.tmp``).
_OWN_FILES = re.compile(r"\.part(\.state|\.lock)?$|^\..+\.\d+\.tmp$")


def _share_filter() -> Callable[[Any, str], bool]:
    """watchfiles' defaults (editor swap files, VCS folders ...) and chunkswarm's own working files."""
    import watchfiles  # here: it loads anyio too (30-60 ms of CPU), for a seeder that follows its folders only

    class _ShareFilter(watchfiles.DefaultFilter):
        def __call__(self, change: watchfiles.Change, path: str) -> bool:
            return super().__call__(change, path) and not _OWN_FILES.search(os.path.basename(path))

    return _ShareFilter()


def _absolute(roots: Iterable[os.PathLike[str] | str]) -> tuple[pathlib.Path, ...]:
    return tuple(pathlib.Path(root).absolute() for root in roots)


def _shareable(path: pathlib.Path) -> bool:
    return not _OWN_FILES.search(path.name)


@attrs.define(eq=False)
class Seeder:
    """Publishes what is under ``roots`` (folders or single files) and follows their changes."""

    peer: Peer
    roots: tuple[pathlib.Path, ...] = attrs.field(converter=_absolute)
    #: How long events are gathered before they are acted on: a file being copied in
    #: raises many, and is hashed once it has been quiet this long.
    debounce: float = 0.3
    #: Seconds between full rescans, for changes the file system did not report.
    rescan_interval: float = 60.0
    #: What this seeder published, by absolute path, with the signature it was hashed at.
    published: dict[pathlib.Path, tuple[int, int]] = attrs.field(init=False, factory=dict)
    #: Files that cannot be published as they are (a name refused), with the signature that was refused.
    refused: dict[pathlib.Path, tuple[int, int]] = attrs.field(init=False, factory=dict)
    #: One update at a time: the events and the rescan may name the same file, which is hashed once.
    _updating: trio.Lock = attrs.field(init=False, factory=trio.Lock)

    async def publish_all(self, *, progress: ProgressSink | None = None) -> list[Manifest]:
        """Publish every shareable file under the roots now; the manifests published."""
        files = await trio.to_thread.run_sync(self._scan)
        return await self._update(files, progress=progress)

    async def follow(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the published files in step with the folders until cancelled (events, then a rescan every ``rescan_interval``)."""
        import watchfiles

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rescan_loop)
            # rust_timeout: the watching thread returns this often, and a cancellation waits for it.
            changes = watchfiles.awatch(*self.roots, watch_filter=_share_filter(), debounce=int(self.debounce * 1000),
                                        step=50, rust_timeout=500, yield_on_timeout=True)  # fmt: skip
            task_status.started()
            async for batch in changes:
                if batch:
                    await self._update({pathlib.Path(path) for _, path in batch})

    async def _rescan_loop(self) -> None:
        while True:
            await trio.sleep(self.rescan_interval)
            files = await trio.to_thread.run_sync(self._scan)
            await self._update(files | set(self.published))

    def _scan(self) -> set[pathlib.Path]:
        """Every shareable regular file under the roots (blocking)."""
        found: set[pathlib.Path] = set()
        for root in self.roots:
            try:
                found.update(path.absolute() for path in expand_paths([root]) if _shareable(path))
            except StorageError as exc:  # a root that is gone: its files are dropped below
                logger.warning("%s", exc)
        return found

    async def _update(self, paths: Iterable[pathlib.Path], *, progress: ProgressSink | None = None) -> list[Manifest]:
        """Bring each of ``paths`` in step: publish it if new or changed, stop serving it if gone; the manifests published."""
        async with self._updating:
            return await self._update_now(paths, progress)

    async def _update_now(self, paths: Iterable[pathlib.Path], progress: ProgressSink | None) -> list[Manifest]:
        published: list[Manifest] = []
        for path in sorted(self._expand(paths)):
            signature = file_signature(path) if path.is_file() and not path.is_symlink() and _shareable(path) else None
            if signature is None:
                if self.published.pop(path, None) is not None:
                    for manifest in self.peer.forget(path):
                        logger.info("%s: %s is gone: no longer serving it (%s)", self.peer.name, path, manifest.hex_id[:16])
                continue
            if self.published.get(path) == signature:
                continue
            try:
                published += await self.peer.publish([path], progress=progress)
            except StorageError as exc:  # changed while hashed, or vanished: the next event or rescan retries
                logger.info("%s: not publishing %s now: %s", self.peer.name, path, exc)
                continue
            except ValidationError as exc:  # a name no one may publish: the rest of the folder is seeded
                if self.refused.get(path) != signature:
                    logger.warning("%s: skipping %s: %s", self.peer.name, path, exc)
                self.refused[path] = signature  # said once, until the file changes
                continue
            changed = path in self.published
            self.published[path] = signature
            if changed:
                logger.info("%s: %s changed: published again", self.peer.name, path)
        return published

    def _expand(self, paths: Iterable[pathlib.Path]) -> set[pathlib.Path]:
        """``paths``, a folder standing for every file under it and for every published file it held (a folder removed)."""
        out: set[pathlib.Path] = set()
        for path in paths:
            if path.is_dir():
                out.update(p.absolute() for p in expand_paths([path]))
            out.add(path)
            out.update(known for known in self.published if path in known.parents)
        return {path for path in out if not path.is_dir()}
