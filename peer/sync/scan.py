"""Scanning a synced folder: every regular file below it with its :class:`~peer.sync.fsops.Stat` (blocking; run in a worker thread).

Skipped, each for a reason: the state folder (``.chunkswarm``), temporary
files of writes in progress, whatever ``.chunkswarmignore`` matches,
symbolic links (a link is never followed: it could lead outside the folder)
and special files. Names that cannot be synced (a backslash, a control
character) and names another system would refuse (``CON``, ``a:b``, two
names differing only in case) are reported in :attr:`Scan.problems`: the
former are left out, the latter synced as they are.

Which files changed since the last scan is the caller's comparison of these
stats with its index (``peer/sync/index.py``): only those are hashed again.
"""

from __future__ import annotations

import functools
import os
import pathlib
import stat as stat_module
from collections.abc import Iterable, Mapping

import attrs

from common.collection import check_path
from common.errors import ValidationError
from common.manifest import check_publishable_name
from common.sync_rules import IGNORE_FILE, STATE_FOLDER, IgnoreRules, case_collisions, check_relative_path, portability_problems
from peer.sync.fsops import Stat, is_temporary

__all__ = ["Scan", "holds_any", "load_ignore_rules", "scan_folder", "scan_paths"]


@attrs.frozen
class Scan:
    """A folder's regular files by relative path, and what was worth telling the user."""

    files: dict[str, Stat]
    problems: tuple[str, ...] = ()
    #: Paths (folders, or "" for the whole folder) that could not be read (a permission, an I/O error): what the
    #: index holds there is not known to be gone. Taken for deletions, a ``chmod 000`` or a failing disk would
    #: delete those files on every other node.
    unknown: tuple[str, ...] = ()

    def hides(self, path: str) -> bool:
        """Whether ``path`` is at or below a path that could not be read (so its absence says nothing)."""
        return any(not folder or path == folder or path.startswith(folder + "/") for folder in self.unknown)


@functools.lru_cache(maxsize=1 << 17)
def _refusal(relative: str, name: str, is_dir: bool) -> str | None:
    """Why ``relative`` (whose last segment is ``name``) cannot be synced, or None.

    Pure in its arguments, and every scan meets the same paths again: a folder of 10,000 files
    rescanned spent 0.15 s of its 0.23 s on these checks (per-character Unicode look-ups).
    """
    try:
        check_relative_path(relative)
        if is_dir:
            check_publishable_name(name)
        else:  # the rule of an entry's path (its name too), checked once: the Entry made of it finds it in check_path's cache
            check_path(relative)
    except ValidationError as exc:
        return f"{relative!r} is not synced: {exc}"
    return None


@functools.lru_cache(maxsize=1 << 17)
def _portability(path: str) -> tuple[str, ...]:
    return tuple(f"{path}: {problem}" for problem in portability_problems(path))


def load_ignore_rules(root: pathlib.Path) -> IgnoreRules:
    try:
        return IgnoreRules.parse((root / IGNORE_FILE).read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return IgnoreRules()
    except OSError:
        return IgnoreRules()


def scan_folder(root: pathlib.Path, rules: IgnoreRules | None = None) -> Scan:
    """Every file below ``root`` that is synced (see the module docstring)."""
    if rules is None:
        rules = load_ignore_rules(root)
    files: dict[str, Stat] = {}
    problems: list[str] = []
    unknown: list[str] = []
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            unknown.append(prefix.rstrip("/"))
            problems.append(f"{unknown[-1] or '.'}: cannot read the folder ({exc.strerror}); its files are kept as they were")
            continue
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            if relative == STATE_FOLDER or is_temporary(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone since the listing
            except OSError as exc:
                problems.append(f"{relative}: cannot look at it ({exc.strerror}); kept as it was")
                unknown.append(relative)
                continue
            is_dir = stat_module.S_ISDIR(st.st_mode)
            if rules.matches(relative, entry.name, is_dir=is_dir):  # its folders are not ignored: the walk is in them
                continue
            if stat_module.S_ISLNK(st.st_mode):
                problems.append(f"{relative}: a symbolic link, not synced")
                continue
            refusal = _refusal(relative, entry.name, is_dir)
            if refusal is not None:
                problems.append(refusal)
                continue
            if is_dir:
                stack.append((relative + "/", pathlib.Path(entry.path)))
            elif stat_module.S_ISREG(st.st_mode):
                files[relative] = Stat.of(st)
    for path in files:
        problems += _portability(path)
    problems += (f"{a} and {b} differ only in case: one file on Windows and macOS" for a, b in case_collisions(sorted(files)))
    return Scan(files, tuple(problems), tuple(unknown))


def scan_paths(root: pathlib.Path, paths: Iterable[str], rules: IgnoreRules | None = None) -> Scan | None:
    """The files among ``paths`` (relative, as the watcher reported them) that :func:`scan_folder` would list.

    None when only a listing of the whole folder can answer: a folder among them (moved in, or
    made), or the ignore file changed. A path not in :attr:`Scan.files` is not a synced file (gone,
    ignored, a link ...). Case collisions are found by the whole folder's scans alone.
    """
    if rules is None:
        rules = load_ignore_rules(root)
    files: dict[str, Stat] = {}
    problems: list[str] = []
    folders: dict[str, bool] = {}  # a folder's relative path -> whether it is one the walk of scan_folder enters
    for relative in paths:
        if relative == IGNORE_FILE:
            return None
        segments = relative.split("/")
        if not all(_entered(root, "/".join(segments[:depth]), folders, rules) for depth in range(1, len(segments))):
            continue
        name = segments[-1]
        if relative == STATE_FOLDER or is_temporary(name):
            continue
        try:
            st = os.lstat(root / relative)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone (or its folder is): not a file
        except OSError:
            return None  # not readable now: the listing of the whole folder says what is not known
        is_dir = stat_module.S_ISDIR(st.st_mode)
        if rules.matches(relative, name, is_dir=is_dir):
            continue
        if is_dir:
            return None
        if stat_module.S_ISLNK(st.st_mode):
            problems.append(f"{relative}: a symbolic link, not synced")
        elif (refusal := _refusal(relative, name, False)) is not None:
            problems.append(refusal)
        elif stat_module.S_ISREG(st.st_mode):
            files[relative] = Stat.of(st)
            problems += _portability(relative)
    return Scan(files, tuple(problems))


def _entered(root: pathlib.Path, folder: str, known: dict[str, bool], rules: IgnoreRules) -> bool:
    """Whether :func:`scan_folder`'s walk enters ``folder`` (its parents are asked first): a real folder, not ignored."""
    if folder not in known:
        name = folder.rpartition("/")[2]
        entered = not (folder == STATE_FOLDER or is_temporary(name) or _refusal(folder, name, True) is not None)
        if entered:
            try:
                entered = stat_module.S_ISDIR(os.lstat(root / folder).st_mode)  # a link to a folder is not one
            except (FileNotFoundError, NotADirectoryError):
                entered = False
            except OSError:
                return True  # not readable now: the path's own look fails the same way, and asks for a listing
            entered = entered and not rules.matches(folder, name, is_dir=True)
        known[folder] = entered
    return known[folder]


def holds_any(stats: Mapping[str, Stat], paths: list[str]) -> bool:
    """Whether any of ``paths`` is a folder holding files of ``stats`` (a folder of the index removed, or replaced).

    On the event loop after every batch of events: each file's own folder taken once, then the folders above
    those few (10,000 files: ~1.7 ms, not the ~7.7 ms of every file's every parent).
    """
    if not paths:
        return False
    folders: set[str] = set()
    for folder in {known.rpartition("/")[0] for known in stats}:
        while folder and folder not in folders:  # (a folder in the set has its parents in it)
            folders.add(folder)
            folder = folder.rpartition("/")[0]
    return any(relative in folders for relative in paths)
