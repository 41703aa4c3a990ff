"""The files a peer holds and serves: :class:`HeldFile` entries in a :class:`Library`, by file id.

A file stops being served when it changes on disk (it is *withdrawn*, and
stays listed as such) or leaves the library (a download that failed or was
cancelled, a file removed). Either way the library's ``on_withdraw`` is told
once, so that the tracker can be told (PROTOCOL.md §8.5, ``peer.withdrawals``).
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Callable, Iterable

import attrs

from common.chunkset import ChunkSet
from common.errors import StorageError
from common.manifest import Manifest
from peer.storage.fs import close_fd, file_signature, storage_error

__all__ = ["HeldFile", "Library", "OnWithdraw", "open_published", "expand_paths", "changed_files"]

logger = logging.getLogger(__name__)

#: Told about each held file that stops being served (set on a :class:`Library`).
OnWithdraw = Callable[["HeldFile"], None]


@attrs.define(eq=False)
class HeldFile:
    """A file the peer serves chunks of: a published file or a (partial) download.

    ``fd`` stays open for the life of the entry; it survives the rename of a
    part file into place. ``signature`` is the (size, mtime_ns) recorded when
    the file was verified; if the file on disk stops matching it, the file is
    withdrawn (a published file edited under our feet must not be served).
    """

    manifest: Manifest
    path: pathlib.Path
    fd: int
    have: ChunkSet
    signature: tuple[int, int] | None = None
    withdrawn: bool = False
    #: A second, ``O_DIRECT`` descriptor on a download's part file, or -1 (see :func:`peer.storage.chunk_io.open_direct`).
    direct_fd: int = -1
    #: The ``on_withdraw`` of the library the file is in, if any.
    on_withdraw: OnWithdraw | None = attrs.field(default=None, repr=False)
    #: Worker-thread reads of ``fd`` under way (:meth:`borrow`): a :meth:`close` meanwhile waits for the last to end.
    readers: int = attrs.field(default=0, repr=False)
    _close_when_read: bool = attrs.field(default=False, repr=False)

    def offers(self, index: int) -> bool:
        """True if chunk ``index`` may be served now (re-checks the file on disk)."""
        if not self.may_serve(index):
            return False
        if self.changed():
            logger.warning("%s changed on disk: no longer serving it", self.path)
            self.withdraw()
            return False
        return True

    def may_serve(self, index: int) -> bool:
        """:meth:`offers` without its check of the file on disk (a ``stat``, which a caller may make in a worker thread)."""
        return not self.withdrawn and index in self.have

    def changed(self) -> bool:
        """Blocking (a ``stat``): whether the file on disk is no longer the one verified (always False without a signature)."""
        return self.signature is not None and file_signature(self.path) != self.signature

    def withdraw(self) -> None:
        """Serve this file no more; ``on_withdraw`` is told, once."""
        if self.withdrawn:
            return
        self.withdrawn = True
        if self.on_withdraw is not None:
            self.on_withdraw(self)

    def borrow(self) -> None:
        """``fd`` is read in a worker thread until :meth:`give_back` (both on the event loop): it stays open till then.

        Instead of an ``os.dup`` per read: a descriptor closed meanwhile could come to name another file, whose
        bytes the thread would read, and a dup and its close cost two system calls on the event loop."""
        self.readers += 1

    def give_back(self) -> None:
        self.readers -= 1
        if not self.readers and self._close_when_read:
            self._close_when_read = False
            self.close()

    def close(self) -> None:
        if self.readers:
            self._close_when_read = True  # the last reader's give_back closes it
            return
        self.fd = close_fd(self.fd)
        self.direct_fd = close_fd(self.direct_fd)


@attrs.define(eq=False)
class Library:
    """The files a peer holds, by file id."""

    files: dict[bytes, HeldFile] = attrs.field(factory=dict)
    #: Told about each file that stops being served: withdrawn, or removed while served.
    on_withdraw: OnWithdraw | None = None

    def get(self, file_id: bytes) -> HeldFile | None:
        return self.files.get(file_id)

    def serves(self, file_id: bytes) -> bool:
        """Whether chunks of ``file_id`` are served (the file is here and not withdrawn)."""
        held = self.files.get(file_id)
        return held is not None and not held.withdrawn

    def add(self, held: HeldFile) -> None:
        """Serve ``held``, in place of any earlier entry of that file id (the same content: nothing is withdrawn)."""
        old = self.files.get(held.manifest.file_id)
        if old is not None and old is not held:
            old.on_withdraw = None
            old.close()
        held.on_withdraw = self.on_withdraw
        self.files[held.manifest.file_id] = held

    def remove(self, file_id: bytes) -> None:
        """Serve ``file_id`` no more and forget it (``on_withdraw`` is told, unless it was withdrawn already)."""
        held = self.files.pop(file_id, None)
        if held is not None:
            held.withdraw()
            held.on_withdraw = None
            held.close()

    def close(self) -> None:
        """Close every file (the peer is stopping: nothing is withdrawn, it leaves the tracker whole)."""
        for held in self.files.values():
            held.on_withdraw = None
            held.close()
        self.files.clear()


def changed_files(held_files: Iterable[HeldFile]) -> list[HeldFile]:
    """Blocking (a ``stat`` each): those of ``held_files`` whose file on disk is no longer the one verified.

    For a sweep in a worker thread: it only reads. The caller withdraws them.
    """
    return [held for held in held_files if held.changed()]


def open_published(path: pathlib.Path, manifest: Manifest, signature: tuple[int, int]) -> HeldFile:
    """A complete file to serve; ``signature`` is the (size, mtime_ns) its manifest was computed for."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error("open", path, exc) from None
    return HeldFile(manifest, path, fd, ChunkSet.full(manifest.chunk_count), signature)


def expand_paths(paths: Iterable[os.PathLike[str] | str]) -> list[pathlib.Path]:
    """Regular files named by ``paths``; a directory stands for every regular file inside it."""
    out: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    child = pathlib.Path(root, name)
                    if child.is_file() and not child.is_symlink():
                        out.append(child)
        elif path.is_file():
            out.append(path)
        else:
            raise StorageError(f"{path}: no such file or directory")
    return out
