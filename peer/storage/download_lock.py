"""One download per output file at a time: ``NAME.part.lock``, an ``flock`` held for the whole download.

Two downloads of one file into one folder would write one part file and one
resume state each thinking it alone owns them (chunks read back differ, the
second move into place finds no part file). The lock file sits beside the
part file; the first download takes an exclusive ``flock`` on it and keeps it
until it ends, then removes the file. ``flock`` belongs to the open file, so
a download that dies (even SIGKILLed) releases it with its process: a lock
file left behind by a dead process never blocks anyone, it is simply taken.

Removing the file on release opens a race with a newcomer that opened the
old file just before: it would lock an unlinked inode while a third
download creates and locks a new file. So a lock is only held once the path
still names the very file locked (same device and inode); otherwise it is
taken again. Blocking: call it from a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib

import attrs

from common.errors import AlreadyDownloading
from peer.storage.fs import close_fd, storage_error
from peer.storage.part_file import PART_SUFFIX

__all__ = ["DownloadLock", "LOCK_SUFFIX", "lock_path"]

LOCK_SUFFIX = ".lock"


def lock_path(final_path: pathlib.Path) -> pathlib.Path:
    """``dir/NAME`` -> ``dir/NAME.part.lock``."""
    return final_path.with_name(final_path.name + PART_SUFFIX + LOCK_SUFFIX)


@attrs.define(eq=False)
class DownloadLock:
    """The lock of the download into ``final_path``; :meth:`acquire`, then :meth:`release` (both blocking)."""

    final_path: pathlib.Path
    fd: int = -1

    @property
    def path(self) -> pathlib.Path:
        return lock_path(self.final_path)

    def acquire(self) -> None:
        """Take the lock at once, or raise :class:`AlreadyDownloading`; creates the output folder if needed."""
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error("create", path.parent, exc) from None
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise storage_error("create", path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise storage_error("lock", path, exc) from None
                by = f" (process {holder})" if holder else ""
                raise AlreadyDownloading(
                    f"another get is already downloading {self.final_path.name} into {self.final_path.parent}{by}: "
                    f"it holds the lock {path}; wait for it to finish"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder removed it between our open and our lock: lock the new one
        self.fd = fd
        # Who holds it, for the message of a download that finds it taken.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (the order matters: see the module docstring)."""
        if self.fd < 0:
            return
        try:
            self.path.unlink()
        except OSError:
            pass  # already gone, or the folder went away: nothing left to protect
        self.fd = close_fd(self.fd)


def _read_pid(fd: int) -> int:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
