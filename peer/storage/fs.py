"""The file-system primitives the storage modules share.

An ``OSError`` from the disk becomes a :class:`~common.errors.StorageError`
here, once (:func:`storage_error`), with the reason a user can act on.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import os
import pathlib
import sys

from common.errors import StorageError

__all__ = ["storage_error", "atomic_write", "temporary_name", "close_fd", "file_signature", "memory_backed"]


def storage_error(action: str, path: os.PathLike[str] | str, exc: OSError) -> StorageError:
    """``cannot ACTION PATH: REASON``, where a full disk (or quota) always reads "disk full"."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = exc.strerror if exc.strerror and exc.strerror.startswith("disk full") else "disk full"
    else:
        reason = exc.strerror or str(exc)
    return StorageError(f"cannot {action} {os.fspath(path)}: {reason}")


#: Numbers the temporaries of :func:`atomic_write` (``next`` on it is atomic under the GIL).
_writes = itertools.count()


def temporary_name(name: str) -> str:
    """A temporary's name beside ``name``, unique to this write.

    The process id keeps processes sharing a folder apart, the count the
    writes of one process: with the process id alone, two threads writing the
    same file at once share one temporary, and one renames the other's away
    (``FileNotFoundError`` at the second rename, or half of one write in place).
    """
    return f".{name}.{os.getpid()}.{next(_writes)}.tmp"


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old content or the new, never half of it (safe from several threads)."""
    temporary = path.with_name(temporary_name(path.name))
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError:
        # A full disk fails the write: leave no half-written temporary file behind.
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def close_fd(fd: int) -> int:
    """Close ``fd`` if open; the value to store in its place (-1)."""
    if fd >= 0:
        os.close(fd)
    return -1


def file_signature(path: pathlib.Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of ``path``, or None if it cannot be read: what tells a changed file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


#: ``statfs`` magic numbers of the file systems whose blocks are memory (linux/magic.h): TMPFS_MAGIC, RAMFS_MAGIC.
_MEMORY_FS = {0x01021994, 0x858458F6}


def memory_backed(fd: int) -> bool:
    """True if ``fd``'s file lives on tmpfs or ramfs (Linux; False where that cannot be told).

    There ``posix_fallocate`` reserves nothing worth having: it zeroes every
    page of the file up front, which costs more than the writes it precedes.
    """
    if sys.platform != "linux":
        return False
    libc = _libc()
    if libc is None:
        return False
    # struct statfs begins with f_type, a native long (__fsword_t); 256 bytes covers the whole struct.
    buffer = ctypes.create_string_buffer(256)
    if libc.fstatfs(fd, buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF in _MEMORY_FS


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's symbols, loaded in the process already (``dlopen(NULL)``)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
