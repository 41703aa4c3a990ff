"""Writing into a synced folder safely (blocking functions: callers run them in worker threads).

* Nothing is written outside the folder: every path goes through
  :func:`common.sync_rules.check_relative_path`, and :func:`target_path`
  refuses a path any of whose folders is a symbolic link (or not a folder), so a
  link planted in the folder cannot lead a write elsewhere.
* Every write is atomic: the content goes to a temporary file in the target's
  own folder (``.NAME.chunkswarm-tmp-RANDOM``, which scans skip), is flushed
  with ``fsync`` when ``fsync`` is on (the default, as Syncthing does: after a
  crash a file's name never holds a half-written content), then renamed over
  the target. A large download is written in the state folder
  (``.chunkswarm/staging``, the same file system) and renamed the same way.
* A file being written on this node is never overwritten silently: just
  before the rename, the target's size and mtime are compared with what the
  node last recorded (:class:`Stat`); if they differ, :class:`ChangedLocally`
  is raised and the node rescans first (its edit then meets the remote one as
  a conflict). What is left is the instant between that check and the rename.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import stat as stat_module

import attrs

from common.errors import StorageError, ValidationError
from common.sync_rules import check_relative_path

__all__ = ["Stat", "ChangedLocally", "TEMP_MARK", "is_temporary", "stat_of", "target_path", "check_unchanged",
           "place", "write_atomic", "write_batch", "Written", "FolderCheck", "copy_atomic", "remove_file", "remove_batch"]  # fmt: skip

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


def target_path(root: pathlib.Path, relative: str, *, create_folders: bool = False) -> pathlib.Path:
    """``root / relative``, checked: a valid relative path whose folders are real folders (no links) inside ``root``.

    With ``create_folders`` the missing folders are made, one by one, each checked.
    """
    check_relative_path(relative)
    *folders, _name = relative.split("/")
    here = root
    for folder in folders:
        here = here / folder
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if not create_folders:
                break
            try:
                os.mkdir(here)
            except FileExistsError:
                pass
            st = os.lstat(here)
        if stat_module.S_ISLNK(st.st_mode):
            raise StorageError(f"{relative}: {here.relative_to(root)} is a symbolic link; nothing is written through it")
        if not stat_module.S_ISDIR(st.st_mode):
            raise StorageError(f"{relative}: {here.relative_to(root)} is not a folder")
    target = root / relative
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(target.parent)]) != real_root:
        raise StorageError(f"{relative} leads outside the synced folder")
    return target


@attrs.define(eq=False)
class FolderCheck:
    """:func:`target_path` for many paths: each folder is checked in full (its realpath taken) once, then by one ``lstat``.

    A folder checked before is taken again only if it is still a folder (not a
    link) and still the same one (device and inode): a folder swapped for a
    link, or for another folder, is checked in full again. Use one for one
    apply, not for the life of the node.
    """

    root: pathlib.Path
    _folders: dict[str, tuple[int, int]] = attrs.field(factory=dict)

    def target(self, relative: str, *, create_folders: bool = False) -> pathlib.Path:
        check_relative_path(relative)
        folder = relative.rpartition("/")[0]
        target = self.root / relative
        known = self._folders.get(folder)
        if known is not None:
            try:
                st = os.lstat(target.parent)
                if stat_module.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == known:
                    return target
            except OSError:
                pass
            self._folders.pop(folder, None)  # (worker threads may share one)
        target = target_path(self.root, relative, create_folders=create_folders)
        try:
            st = os.lstat(target.parent)
        except OSError:
            return target  # not there (and not to be made): nothing is written through it
        if stat_module.S_ISDIR(st.st_mode):
            self._folders[folder] = (st.st_dev, st.st_ino)
        return target


def check_unchanged(target: pathlib.Path, expected: Stat | None) -> None:
    """:class:`ChangedLocally` unless the file at ``target`` is still as recorded (``None``: there is none); one ``lstat``."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        if expected is None:
            return
        st = None
    except OSError as exc:
        raise StorageError(f"{target}: {exc.strerror}") from None
    if expected is None and st is not None:
        if stat_module.S_ISDIR(st.st_mode):
            raise ChangedLocally(f"{target}: a folder is in the way")
        if not stat_module.S_ISREG(st.st_mode):  # a link or a special file where a file goes
            raise ChangedLocally(f"{target}: something other than a regular file is in the way")
    if expected is None or st is None or not stat_module.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != (expected.size, expected.mtime_ns):
        raise ChangedLocally(f"{target} changed on this node since it was scanned; it is rescanned before anything overwrites it")


def _finish(temp: pathlib.Path, target: pathlib.Path, expected: Stat | None, mtime_ns: int, mode: int, fsync: bool) -> Stat:
    os.chmod(temp, mode & 0o7777)
    os.utime(temp, ns=(mtime_ns, mtime_ns))
    if fsync:
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    check_unchanged(target, expected)
    os.replace(temp, target)
    st = stat_of(target)
    assert st is not None
    return st


def _temp_for(target: pathlib.Path) -> pathlib.Path:
    return target.with_name(f".{target.name[:64]}{TEMP_MARK}{secrets.token_hex(4)}")


def place(staged: pathlib.Path, target: pathlib.Path, expected: Stat | None, *, mtime_ns: int, mode: int, fsync: bool) -> Stat:
    """Move ``staged`` (on the same file system) over ``target`` if ``target`` is still ``expected``; its new :class:`Stat`."""
    try:
        return _finish(staged, target, expected, mtime_ns, mode, fsync)
    except OSError as exc:
        raise StorageError(f"cannot place {target}: {exc.strerror}") from None


def write_atomic(target: pathlib.Path, data: bytes | bytearray | memoryview, expected: Stat | None, *, mtime_ns: int, mode: int,
                 fsync: bool) -> Stat:  # fmt: skip
    """Write ``data`` to ``target`` through a temporary file beside it (see the module docstring); the new :class:`Stat`."""
    temp = _temp_for(target)
    try:
        with open(temp, "xb") as out:
            out.write(data)
        return _finish(temp, target, expected, mtime_ns, mode, fsync)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        temp.unlink(missing_ok=True)


@attrs.frozen
class Written:
    """A file :func:`write_batch` put in place: its :class:`Stat`, and a read descriptor on what was written (the caller owns it)."""

    stat: Stat
    fd: int


def write_batch(check: FolderCheck, jobs: list[tuple[str, bytes, Stat | None, int, int]], *, fsync: bool) -> list[Written | Exception]:
    """Write files (relative path, data, expected, mtime_ns, mode) atomically, as :func:`write_atomic` does each, in fewer calls.

    Every temporary file is written, given its mode and mtime through its
    descriptor, then all are flushed together (``fsync`` on each descriptor, one
    after the other, so the disk sees them as one stream); only then is each
    target re-checked (:func:`check_unchanged`) and the temporary renamed over
    it. Per file: a :class:`Written`, or the :class:`StorageError` /
    :class:`~common.errors.ValidationError` that kept it out.
    """
    out: list[Written | Exception | None] = [None] * len(jobs)
    staged: list[tuple[int, pathlib.Path, pathlib.Path, int]] = []
    finished = False
    try:
        for at, (relative, data, _expected, mtime_ns, mode) in enumerate(jobs):
            try:
                target = check.target(relative, create_folders=True)
            except (StorageError, ValidationError) as exc:
                out[at] = exc
                continue
            temp = _temp_for(target)
            try:
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                out[at] = StorageError(f"cannot write {target}: {exc.strerror}")
                continue
            staged.append((at, temp, target, fd))
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode & 0o7777)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            except OSError as exc:
                out[at] = StorageError(f"cannot write {target}: {exc.strerror}")
        if fsync:
            for at, _temp, target, fd in staged:
                if out[at] is None:
                    try:
                        os.fsync(fd)
                    except OSError as exc:
                        out[at] = StorageError(f"cannot write {target}: {exc.strerror}")
        for at, temp, target, fd in staged:
            if out[at] is not None:
                continue
            try:
                check_unchanged(target, jobs[at][2])
                os.replace(temp, target)
                out[at] = Written(Stat.of(os.fstat(fd)), fd)
            except StorageError as exc:
                out[at] = exc
            except OSError as exc:
                out[at] = StorageError(f"cannot write {target}: {exc.strerror}")
        finished = True
    finally:
        for at, temp, _target, fd in staged:
            if not finished or not isinstance(out[at], Written):
                os.close(fd)
                temp.unlink(missing_ok=True)
    assert all(result is not None for result in out)
    return out  # type: ignore[return-value]


def copy_atomic(source: pathlib.Path, target: pathlib.Path, expected: Stat | None, *, mtime_ns: int, mode: int, fsync: bool) -> Stat:
    """Copy ``source`` (a file of this folder) to ``target`` atomically; the caller verifies the copy's content."""
    temp = _temp_for(target)
    try:
        shutil.copyfile(source, temp, follow_symlinks=False)
        return _finish(temp, target, expected, mtime_ns, mode, fsync)
    except OSError as exc:
        raise StorageError(f"cannot copy {source} to {target}: {exc.strerror}") from None
    finally:
        temp.unlink(missing_ok=True)


def remove_file(root: pathlib.Path, target: pathlib.Path, expected: Stat | None) -> None:
    """Remove ``target`` if it is still ``expected`` (a file changed since it was scanned is kept: :class:`ChangedLocally`)."""
    if _unlink(target, expected):
        _prune(root, target.parent)


def remove_batch(check: FolderCheck, jobs: list[tuple[str, Stat | None]], keep: frozenset[pathlib.Path] = frozenset()) -> list[Exception | None]:
    """:func:`remove_file` for each (relative path, expected) in one call; per path None, or why it was kept.

    Folders are checked once each, and those left empty are removed once, at the end, deepest first,
    except those in ``keep`` (files are being written into them meanwhile).
    """
    out: list[Exception | None] = []
    emptied: set[pathlib.Path] = set()
    for relative, expected in jobs:
        try:
            target = check.target(relative)
            if _unlink(target, expected):
                emptied.add(target.parent)
        except (StorageError, ValidationError) as exc:
            out.append(exc)
            continue
        out.append(None)
    for parent in sorted(emptied - keep, key=lambda folder: len(folder.parts), reverse=True):
        _prune(check.root, parent)
    return out


def _unlink(target: pathlib.Path, expected: Stat | None) -> bool:
    """Remove ``target`` if it is still ``expected``; True if a file was removed."""
    if expected is None and stat_of(target) is None:
        return False
    check_unchanged(target, expected)
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot remove {target}: {exc.strerror}") from None
    return True


def _prune(root: pathlib.Path, parent: pathlib.Path) -> None:
    """Remove the empty folders from ``parent`` up, as a deletion on the other side left none, up to the folder's top."""
    while parent != root and root in parent.parents:
        try:
            os.rmdir(parent)
        except OSError:
            break
        parent = parent.parent
