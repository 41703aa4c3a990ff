"""Paths of a synced folder opened beneath it, without a race between a check and its use (blocking: run in worker threads).

Checking a path (``lstat`` each folder, ``realpath``) and then opening it by
name leaves an instant in which a folder can be swapped for a symbolic link
to elsewhere: the open then follows the link out of the folder. Here nothing
is looked up by a full path. The folder's top is held open (:class:`Root`);
each folder below is opened from its parent's descriptor, one name at a time,
with ``O_DIRECTORY | O_NOFOLLOW`` (a link, or anything but a folder, fails
the open itself), and the file is then created, renamed, removed or opened
(with ``O_NOFOLLOW``) relative to its folder's descriptor (``dir_fd=``).
A link swapped in after a folder was opened changes nothing: the descriptor
is the folder that was checked. (This is what ``openat2``'s
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` does in one call; Python has no
binding for it.)

What is left: a folder already opened and then moved out of the synced
folder by someone on this machine is still written through; that takes a
rename by a local user, which no remote peer can cause.
"""

from __future__ import annotations

import errno
import os
import pathlib
import stat as stat_module
import threading
from types import TracebackType

import attrs

from common.errors import StorageError
from common.sync_rules import check_relative_path

__all__ = ["Root", "Folders", "NotThere", "open_file", "lstat_at"]

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: O_NONBLOCK: a file swapped for a FIFO fails the regular-file check below instead of blocking the open.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class NotThere(StorageError):
    """A folder on a path is missing (and was not to be made): nothing is at the path."""


@attrs.define(eq=False)
class Root:
    """The top of a synced folder, held open (opened on first use, again after :meth:`close`)."""

    path: pathlib.Path
    _fd: int = -1
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def fd(self) -> int:
        if self._fd < 0:
            with self._lock:  # (worker threads may ask at once: one descriptor)
                if self._fd < 0:
                    try:
                        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    except OSError as exc:
                        raise StorageError(f"{self.path}: cannot open the synced folder: {exc.strerror}") from None
        return self._fd

    def check_same(self) -> None:
        """Blocking: raise StorageError unless :attr:`path` is still the folder held open.

        Removed and made again, or a drive unmounted under it, the path is an empty folder: listed, every
        file would count as deleted, and the deletions would reach every other node (Syncthing keeps a
        marker folder in each synced folder for this).
        """
        try:
            now = os.stat(self.path)
        except OSError as exc:
            now = None
            why = exc.strerror
        held = os.fstat(self.fd)
        if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            gone = f"gone ({why})" if now is None else "another folder now"
            raise StorageError(f"{self.path}: the synced folder was removed or replaced, or its drive unmounted, while syncing "
                               f"(the path is {gone}); nothing is scanned or deleted until the sync is started again")  # fmt: skip

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@attrs.define(eq=False)
class Folders:
    """Descriptors of the folders below ``root`` that one batch uses, each opened once; closed with the batch.

    Use one per worker-thread call, not longer: a folder removed and made again
    in between would be written through its old (deleted) descriptor.
    """

    root: Root
    _open: dict[str, int] = attrs.field(factory=dict)

    def __enter__(self) -> Folders:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def parent(self, relative: str, *, create: bool = False) -> tuple[int, str]:
        """The descriptor of the folder of ``relative`` (checked: :func:`common.sync_rules.check_relative_path`) and its last name.

        With ``create`` the missing folders are made, one by one. A folder that
        is a link or not a folder raises :class:`StorageError`; a missing one
        :class:`NotThere`.
        """
        check_relative_path(relative)
        folder, _, name = relative.rpartition("/")
        return self.folder(folder, relative, create=create), name

    def folder(self, folder: str, relative: str = "", *, create: bool = False) -> int:
        """The descriptor of ``folder`` ("" for the top), opened from its parent's; ``relative`` names the path in errors."""
        if not folder:
            return self.root.fd
        fd = self._open.get(folder)
        if fd is not None:
            return fd
        above, _, name = folder.rpartition("/")
        parent = self.folder(above, relative, create=create)
        try:
            fd = _open_folder(parent, name, create)
        except FileNotFoundError:
            raise NotThere(f"{relative or folder}: {folder} is not there") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
                st = lstat_at(parent, name)
                what = "is a symbolic link; nothing is written or read through it" if st is not None and stat_module.S_ISLNK(st.st_mode) else "is not a folder"
                raise StorageError(f"{relative or folder}: {folder} {what}") from None
            raise StorageError(f"{relative or folder}: cannot open {folder}: {exc.strerror}") from None
        self._open[folder] = fd
        return fd


def _open_folder(parent: int, name: str, create: bool) -> int:
    try:
        return os.open(name, _DIRECTORY, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o777, dir_fd=parent)
    except FileExistsError:
        pass  # made meanwhile (or a link made meanwhile: the open below refuses it)
    return os.open(name, _DIRECTORY, dir_fd=parent)


def lstat_at(folder: int, name: str) -> os.stat_result | None:
    """The ``lstat`` of ``name`` in the folder open at ``folder``; None if there is nothing there."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{name}: {exc.strerror}") from None


def open_file(folders: Folders, relative: str) -> int:
    """A read-only descriptor on the regular file at ``relative`` (no link followed on the way); the caller closes it.

    :class:`StorageError` (:class:`NotThere` if a folder is missing) or
    :class:`FileNotFoundError` if there is no such file.
    """
    parent, name = folders.parent(relative)
    try:
        fd = os.open(name, _READ, dir_fd=parent)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"{relative} is a symbolic link; it is not read") from None
        raise StorageError(f"{relative}: {exc.strerror}") from None
    try:
        regular = stat_module.S_ISREG(os.fstat(fd).st_mode)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"{relative}: {exc.strerror}") from None
    if not regular:
        os.close(fd)
        raise StorageError(f"{relative} is not a regular file")
    return fd
