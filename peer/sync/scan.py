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

import os
import pathlib
import stat as stat_module

import attrs

from common.collection import check_path
from common.errors import ValidationError
from common.manifest import check_publishable_name
from common.sync_rules import IGNORE_FILE, STATE_FOLDER, IgnoreRules, case_collisions, check_relative_path, portability_problems
from peer.sync.fsops import Stat, is_temporary

__all__ = ["Scan", "load_ignore_rules", "scan_folder"]


@attrs.frozen
class Scan:
    """A folder's regular files by relative path, and what was worth telling the user."""

    files: dict[str, Stat]
    problems: tuple[str, ...] = ()


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
    stack = [("", root)]
    while stack:
        prefix, folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            problems.append(f"{prefix or '.'}: cannot read the folder ({exc.strerror})")
            continue
        for entry in entries:
            relative = f"{prefix}{entry.name}"
            if relative == STATE_FOLDER or is_temporary(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since the listing
            is_dir = stat_module.S_ISDIR(st.st_mode)
            if rules.ignored(relative, is_dir=is_dir):
                continue
            if stat_module.S_ISLNK(st.st_mode):
                problems.append(f"{relative}: a symbolic link, not synced")
                continue
            try:
                check_relative_path(relative)
                if is_dir:
                    check_publishable_name(entry.name)
                else:  # the rule of an entry's path (its name too), checked once: the Entry made of it finds it in the cache
                    check_path(relative)
            except ValidationError as exc:
                problems.append(f"{relative!r} is not synced: {exc}")
                continue
            if is_dir:
                stack.append((relative + "/", pathlib.Path(entry.path)))
            elif stat_module.S_ISREG(st.st_mode):
                files[relative] = Stat.of(st)
    for path in files:
        problems += (f"{path}: {problem}" for problem in portability_problems(path))
    problems += (f"{a} and {b} differ only in case: one file on Windows and macOS" for a, b in case_collisions(sorted(files)))
    return Scan(files, tuple(problems))
