"""Writing into a synced folder safely (blocking functions: callers run them in worker threads).

* Nothing is written, removed or read outside the folder: every path goes
  through :func:`common.sync_rules.check_relative_path`, then is opened
  beneath the folder's own descriptor, one folder at a time, no link followed
  (``peer/sync/beneath.py``); every file operation is relative to its
  folder's descriptor, so a folder swapped for a link after it was checked
  leads nowhere.
* Every write is atomic: the content goes to a temporary file in the target's
  own folder (``.NAME.chunkswarm-tmp-RANDOM``, which scans skip), is flushed
  with ``fsync`` when ``fsync`` is on (the default, as Syncthing does: after a
  crash a file's name never holds a half-written content), then renamed over
  the target. A large download is written in the state folder
  (``.chunkswarm/staging``, the same file system) and renamed the same way.
* A file being written on this node is never overwritten silently: just
  before the rename, the target's size and mtime (looked up in its folder's
  descriptor) are compared with what the node last recorded (:class:`Stat`);
  if they differ, :class:`ChangedLocally` is raised and the node rescans first
  (its edit then meets the remote one as a conflict). What is left is the
  instant between that check and the rename.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import stat as stat_module

import attrs

from common.errors import StorageError, ValidationError
from peer.sync.beneath import Folders, NotThere, Root, lstat_at, open_file

__all__ = ["Stat", "ChangedLocally", "TEMP_MARK", "is_temporary", "stat_of", "Root", "place", "write_atomic", "write_batch", "Written",
           "copy_atomic", "set_aside", "remove_file", "remove_batch"]  # fmt: skip

#: Part of every temporary file's name; scans and the watcher skip such files.
TEMP_MARK = ".chunkswarm-tmp-"


class ChangedLocally(StorageError):
    """The file at a path changed on this node since it was last scanned: it is not overwritten."""


@attrs.frozen
class Stat:
    """What a scan records of a file: enough to tell, without reading it, that it changed."""

    size: int
    mtime_ns: int
    mode: int
    ino: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> Stat:
        return cls(st.st_size, st.st_mtime_ns, stat_module.S_IMODE(st.st_mode), st.st_ino)


def is_temporary(name: str) -> bool:
    return TEMP_MARK in name


def stat_of(path: pathlib.Path) -> Stat | None:
    """The :class:`Stat` of the regular file at ``path``; None if there is none (or a link, a folder ...)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror}") from None
    return Stat.of(st) if stat_module.S_ISREG(st.st_mode) else None


_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW


def _unchanged(folder: int, name: str, expected: Stat | None, shown: str) -> None:
    """:class:`ChangedLocally` unless ``name`` in ``folder`` is still as recorded (``None``: there is none); one ``lstat``."""
    st = lstat_at(folder, name)
    if st is None:
        if expected is None:
            return
    elif expected is None:
        if stat_module.S_ISDIR(st.st_mode):
            raise ChangedLocally(f"{shown}: a folder is in the way")
        if not stat_module.S_ISREG(st.st_mode):  # a link or a special file where a file goes
            raise ChangedLocally(f"{shown}: something other than a regular file is in the way")
    elif stat_module.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (expected.size, expected.mtime_ns):
        return
    raise ChangedLocally(f"{shown} changed on this node since it was scanned; it is rescanned before anything overwrites it")


def _temp_name(name: str) -> str:
    return f".{name[:64]}{TEMP_MARK}{secrets.token_hex(4)}"


def _unlink_quietly(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        pass


def place(root: Root, staged: pathlib.Path, relative: str, expected: Stat | None, *, mtime_ns: int, mode: int, fsync: bool) -> Stat:
    """Move ``staged`` (on the same file system) to ``relative`` if the file there is still ``expected``; its new :class:`Stat`."""
    with Folders(root) as folders:
        folder, name = folders.parent(relative, create=True)
        try:
            fd = os.open(staged, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, mode & 0o7777)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                if fsync:
                    os.fsync(fd)
                _unchanged(folder, name, expected, relative)
                os.rename(staged, name, dst_dir_fd=folder)
                return Stat.of(os.fstat(fd))
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot place {relative}: {exc.strerror}") from None


def write_atomic(root: Root, relative: str, data: bytes | bytearray | memoryview, expected: Stat | None, *, mtime_ns: int, mode: int,
                 fsync: bool) -> Stat:  # fmt: skip
    """Write ``data`` to ``relative`` through a temporary file beside it (see the module docstring); the new :class:`Stat`."""
    (result,) = write_batch(root, [(relative, data, expected, mtime_ns, mode)], fsync=fsync)
    if isinstance(result, Exception):
        raise result
    os.close(result.fd)
    return result.stat


@attrs.frozen
class Written:
    """A file :func:`write_batch` put in place: its :class:`Stat`, and a read descriptor on what was written (the caller owns it)."""

    stat: Stat
    fd: int


def write_batch(root: Root, jobs: list[tuple[str, bytes | bytearray | memoryview, Stat | None, int, int]], *, fsync: bool) -> list[Written | Exception]:
    """Write files (relative path, data, expected, mtime_ns, mode) below ``root`` atomically, in one call.

    Every temporary file is made in its folder's descriptor (each folder opened
    once for the batch), written, given its mode and mtime through its
    descriptor, then all are flushed together (``fsync`` on each descriptor,
    one after the other, so the disk sees them as one stream); only then is
    each target re-checked and the temporary renamed over it, within the same
    folder descriptor. Per file: a :class:`Written`, or the
    :class:`StorageError` / :class:`~common.errors.ValidationError` that kept it out.
    """
    out: list[Written | Exception | None] = [None] * len(jobs)
    staged: list[tuple[int, int, str, int]] = []  # (job, folder descriptor, temporary name, descriptor)
    finished = False
    with Folders(root) as folders:
        try:
            for at, (relative, data, _expected, mtime_ns, mode) in enumerate(jobs):
                try:
                    folder, name = folders.parent(relative, create=True)
                    temp = _temp_name(name)
                    fd = os.open(temp, _CREATE, 0o600, dir_fd=folder)
                except (StorageError, ValidationError) as exc:
                    out[at] = exc
                    continue
                except OSError as exc:
                    out[at] = StorageError(f"cannot write {relative}: {exc.strerror}")
                    continue
                staged.append((at, folder, temp, fd))
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchmod(fd, mode & 0o7777)
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                except OSError as exc:
                    out[at] = StorageError(f"cannot write {relative}: {exc.strerror}")
            if fsync:
                for at, _folder, _temp, fd in staged:
                    if out[at] is None:
                        try:
                            os.fsync(fd)
                        except OSError as exc:
                            out[at] = StorageError(f"cannot write {jobs[at][0]}: {exc.strerror}")
            for at, folder, temp, fd in staged:
                if out[at] is not None:
                    continue
                relative = jobs[at][0]
                name = relative.rpartition("/")[2]
                try:
                    _unchanged(folder, name, jobs[at][2], relative)
                    os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
                    out[at] = Written(Stat.of(os.fstat(fd)), fd)
                except StorageError as exc:
                    out[at] = exc
                except OSError as exc:
                    out[at] = StorageError(f"cannot write {relative}: {exc.strerror}")
            _removed_meanwhile(staged, out, jobs)
            finished = True
        finally:
            for at, folder, temp, fd in staged:
                if not finished or not isinstance(out[at], Written):
                    os.close(fd)
                    _unlink_quietly(folder, temp)
    assert all(result is not None for result in out)
    return out  # type: ignore[return-value]


def _removed_meanwhile(staged: list[tuple[int, int, str, int]], out: list[Written | Exception | None], jobs: list[tuple[str, bytes | bytearray | memoryview, Stat | None, int, int]]) -> None:
    """A file renamed into a folder removed meanwhile (on this node) is in no folder: not written after all."""
    gone: dict[int, bool] = {}
    for at, folder, _temp, _fd in staged:
        written = out[at]
        if not isinstance(written, Written):
            continue
        if folder not in gone:
            gone[folder] = os.fstat(folder).st_nlink == 0
        if gone[folder]:
            os.close(written.fd)
            out[at] = StorageError(f"cannot write {jobs[at][0]}: its folder was removed meanwhile")


def copy_atomic(root: Root, source: str, source_stat: Stat, relative: str, expected: Stat | None, *, mtime_ns: int, mode: int,
                fsync: bool) -> Stat:  # fmt: skip
    """Copy the file at ``source`` (still ``source_stat``, else :class:`ChangedLocally`) to ``relative`` atomically.

    The caller verifies the copy's content (it is what ``source`` held when it was scanned, unless the
    source changed within its mtime's granularity).
    """
    with Folders(root) as folders:
        try:
            reader = open_file(folders, source)
        except (FileNotFoundError, NotThere):
            raise ChangedLocally(f"{source} changed on this node since it was scanned (it is gone)") from None
        try:
            folder, name = folders.parent(relative, create=True)
            temp = _temp_name(name)
            renamed = False
            try:
                fd = os.open(temp, _CREATE, 0o600, dir_fd=folder)
                try:
                    before = Stat.of(os.fstat(reader))
                    offset = 0
                    while sent := os.sendfile(fd, reader, offset, 1 << 30):
                        offset += sent
                    if (before.size, before.mtime_ns) != (source_stat.size, source_stat.mtime_ns) or Stat.of(os.fstat(reader)) != before:
                        raise ChangedLocally(f"{source} changed on this node since it was scanned; it is rescanned first")
                    os.fchmod(fd, mode & 0o7777)
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                    if fsync:
                        os.fsync(fd)
                    _unchanged(folder, name, expected, relative)
                    os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
                    renamed = True
                    return Stat.of(os.fstat(fd))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise StorageError(f"cannot copy {source} to {relative}: {exc.strerror}") from None
            finally:
                if not renamed:
                    _unlink_quietly(folder, temp)
        finally:
            os.close(reader)


def set_aside(root: Root, path: str, copy_path: str, expected: Stat | None) -> Stat | None:
    """Rename the file at ``path`` (still ``expected``) to ``copy_path``, which must not exist; its :class:`Stat` there."""
    with Folders(root) as folders:
        try:
            source, name = folders.parent(path)
        except NotThere:
            if expected is not None:
                raise ChangedLocally(f"{path} changed on this node since it was scanned (it is gone)") from None
            return None
        folder, copy_name = folders.parent(copy_path, create=True)
        _unchanged(source, name, expected, path)
        if lstat_at(folder, copy_name) is not None:
            raise StorageError(f"{copy_path} exists already")
        if expected is None:
            return None
        try:
            os.rename(name, copy_name, src_dir_fd=source, dst_dir_fd=folder)
        except OSError as exc:
            raise StorageError(f"cannot rename {path} to {copy_path}: {exc.strerror}") from None
        st = lstat_at(folder, copy_name)
        return Stat.of(st) if st is not None and stat_module.S_ISREG(st.st_mode) else None


def remove_file(root: Root, relative: str, expected: Stat | None) -> None:
    """Remove ``relative`` if it is still ``expected`` (a file changed since it was scanned is kept: :class:`ChangedLocally`)."""
    (result,) = remove_batch(root, [(relative, expected)])
    if result is not None:
        raise result


def remove_batch(root: Root, jobs: list[tuple[str, Stat | None]], keep: frozenset[str] = frozenset()) -> list[Exception | None]:
    """:func:`remove_file` for each (relative path, expected) in one call; per path None, or why it was kept.

    Folders are opened once each, and those left empty are removed once, at the end, deepest first,
    except those in ``keep`` (relative paths: files are being written into them meanwhile).
    """
    out: list[Exception | None] = []
    emptied: set[str] = set()
    with Folders(root) as folders:
        for relative, expected in jobs:
            try:
                if _unlink(folders, relative, expected):
                    emptied.add(relative.rpartition("/")[0])
            except (StorageError, ValidationError) as exc:
                out.append(exc)
                continue
            out.append(None)
        for folder in sorted(emptied - keep, key=lambda folder: folder.count("/"), reverse=True):
            _prune(folders, folder)
    return out


def _unlink(folders: Folders, relative: str, expected: Stat | None) -> bool:
    """Remove ``relative`` if it is still ``expected``; True if a file was removed."""
    try:
        folder, name = folders.parent(relative)
    except NotThere:
        if expected is not None:
            raise ChangedLocally(f"{relative} changed on this node since it was scanned (it is gone)") from None
        return False
    if expected is None:
        st = lstat_at(folder, name)
        if st is None or not stat_module.S_ISREG(st.st_mode):
            return False
    _unchanged(folder, name, expected, relative)
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot remove {relative}: {exc.strerror}") from None
    return True


def _prune(folders: Folders, folder: str) -> None:
    """Remove the empty folders from ``folder`` up, as a deletion on the other side left none, up to the synced folder's top."""
    while folder:
        above, _, name = folder.rpartition("/")
        try:
            os.rmdir(name, dir_fd=folders.folder(above))
        except (OSError, StorageError):
            break
        folder = above
