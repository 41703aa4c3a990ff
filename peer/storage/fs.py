"""The file-system primitives the storage modules share.

An ``OSError`` from the disk becomes a :class:`~common.errors.StorageError`
here, once (:func:`storage_error`), with the reason a user can act on.
"""

from __future__ import annotations

import errno
import os
import pathlib

from common.errors import StorageError

__all__ = ["storage_error", "atomic_write", "close_fd", "file_signature"]


def storage_error(action: str, path: os.PathLike[str] | str, exc: OSError) -> StorageError:
    """``cannot ACTION PATH: REASON``, where a full disk (or quota) always reads "disk full"."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = exc.strerror if exc.strerror and exc.strerror.startswith("disk full") else "disk full"
    else:
        reason = exc.strerror or str(exc)
    return StorageError(f"cannot {action} {os.fspath(path)}: {reason}")


def atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old content or the new, never half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
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
