"""The sync's state folder ``DIR/.chunkswarm``, read and written beneath the synced folder (blocking: run in worker threads).

The index, the version kept and the status file live in the synced folder
itself, and are reached the way :mod:`peer.sync.beneath` reaches synced
files: the state folder is opened from the folder's held descriptor with
``O_DIRECTORY | O_NOFOLLOW`` (a symbolic link, or anything but a folder,
fails the open itself) and its files are read, written and renamed relative
to that descriptor (``dir_fd=``, ``O_NOFOLLOW``). Written by path, a
``.chunkswarm`` swapped for a link to elsewhere would have the node write
(and read) its state outside the folder.

Before each use the state folder's name is looked at again:
a folder removed and made again is opened anew, a link or a file is refused
with a :class:`~common.errors.StorageError` that says so.

The manifest cache below it (``manifests/``) goes the same way
(:meth:`StateFolder.sub`). ``staging/``, where downloads are written, is still
handed to code that works by path (the downloader): :meth:`StateFolder.check`
makes each cycle refuse a state folder or a staging folder swapped for a link
before a download starts, which narrows, but does not close, the gap for that one.
"""

from __future__ import annotations

import errno
import os
import pathlib
import stat as stat_module
import threading

import attrs

from common.errors import StorageError
from common.sync_rules import STATE_FOLDER
from peer.storage.fs import temporary_name
from peer.sync.beneath import Root, lstat_at

__all__ = ["StateFolder"]

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@attrs.define(eq=False)
class StateFolder:
    """Folder ``name`` in ``parent`` (the synced folder held open, or a state folder: :meth:`sub`), itself held open.

    Closed with :meth:`close` (opened again on use). A folder and its
    subfolders share one lock: a subfolder is opened from its parent's
    descriptor, which must not be closed meanwhile.
    """

    parent: Root | StateFolder
    name: str = STATE_FOLDER
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _fd: int = -1
    _subs: list[StateFolder] = attrs.field(factory=list)

    @property
    def root(self) -> Root:
        """The synced folder this one is in."""
        return self.parent if isinstance(self.parent, Root) else self.parent.root

    @property
    def path(self) -> pathlib.Path:
        """Its path, for messages and for the code that still works by path (see the module docstring)."""
        return self.parent.path / self.name

    def sub(self, name: str) -> StateFolder:
        """Folder ``name`` in this one, read and written the same way (made on first write); closed with this one."""
        folder = StateFolder(self, name, self._lock)
        self._subs.append(folder)
        return folder

    def _folder(self, *, create: bool = True) -> int | None:
        """The state folder's descriptor: the one held while its name still leads to it, else opened (or made) again.

        None if there is none and ``create`` is false (a reader's look: nothing is made).

        Called with ``_lock`` held, and used under it: one thread never closes
        the descriptor another is writing through (nor writes through a number
        the system has given to another file meanwhile). The writes are few and
        small; serialising them costs nothing worth measuring.
        """
        parent = self.parent.fd if isinstance(self.parent, Root) else self.parent._folder(create=create)
        if parent is None:
            return None
        name = self.name
        st = lstat_at(parent, name)
        if self._fd >= 0:
            held = os.fstat(self._fd)
            if st is not None and (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino):
                return self._fd
            os.close(self._fd)  # removed, or replaced: what is at the name now is checked below
            self._fd = -1
        if st is not None and not stat_module.S_ISDIR(st.st_mode):
            self._refuse(st)
        if st is None:
            if not create:
                return None
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile (a link made meanwhile: the open refuses it)
            except OSError as exc:
                raise StorageError(f"cannot make the state folder {self.path}: {exc.strerror}") from None
        try:
            self._fd = os.open(name, _DIRECTORY, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self._refuse(lstat_at(parent, name))
            raise StorageError(f"cannot open the state folder {self.path}: {exc.strerror}") from None
        return self._fd

    def _refuse(self, st: os.stat_result | None) -> None:
        what = "a symbolic link" if st is not None and stat_module.S_ISLNK(st.st_mode) else "not a folder"
        raise StorageError(f"the state folder {self.path} is {what}: nothing is written or read through it; "
                           f"remove it (a folder is made in its place) and start the sync again")  # fmt: skip

    def check(self) -> None:
        """Raise :class:`StorageError` unless this folder and its subfolders are folders (made if missing): before by-path users run."""
        with self._lock:
            for folder in [self, *self._subs]:
                folder._folder()

    def read(self, name: str) -> bytes | None:
        """The content of the state file ``name``; None if there is none (nor a state folder: none is made)."""
        with self._lock:
            return self._read(name)

    def _read(self, name: str) -> bytes | None:
        folder = self._folder(create=False)
        if folder is None:
            return None
        try:
            fd = os.open(name, _READ, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.path / name}: {exc.strerror}") from None
        try:
            if not stat_module.S_ISREG(os.fstat(fd).st_mode):
                raise StorageError(f"{self.path / name} is not a regular file")
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise StorageError(f"cannot read {self.path / name}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes) -> None:
        """Replace the state file ``name`` with ``data``: readers see the old content or the new, never half (safe from several threads)."""
        with self._lock:
            self._write(name, data)

    def _write(self, name: str, data: bytes) -> None:
        folder = self._folder()
        assert folder is not None  # (made)
        temporary = temporary_name(name)
        try:
            fd = os.open(temporary, _CREATE, 0o666, dir_fd=folder)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
        except OSError as exc:
            try:
                os.unlink(temporary, dir_fd=folder)  # (a full disk: no half-written temporary left behind)
            except OSError:
                pass
            raise StorageError(f"cannot write {self.path / name}: {exc.strerror or exc}") from None

    def close(self, *, root: bool = False) -> None:
        """Close it, and its subfolders (each opened again on use); with ``root``, the synced folder's descriptor too."""
        with self._lock:
            for folder in [self, *self._subs]:
                if folder._fd >= 0:
                    os.close(folder._fd)
                    folder._fd = -1
        if root:
            self.root.close()
