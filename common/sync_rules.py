"""The rules of folder sync that need no I/O: which relative paths may be written, which are ignored, how a conflict copy is named.

A synced folder's entries are relative POSIX paths (``docs/a.txt``). A path
from another node is only ever joined below the folder after
:func:`check_relative_path` has accepted it: no absolute path, no ``..`` or
``.`` segment, no empty segment, no backslash or control character. Symbolic
links are the file system's business (``peer/sync/fsops.py`` refuses to write
through one).

Names that one operating system accepts and another does not (``CON`` or
``a:b`` on Windows, two names differing only in case on macOS and Windows)
are reported by :func:`portability_problems` and :func:`case_collisions`,
never renamed: a name changed behind a user's back is a file lost to them.

``.chunkswarmignore`` (:class:`IgnoreRules`) holds glob patterns, one a line,
in the manner of ``.gitignore``: ``#`` starts a comment; a pattern without
``/`` matches a file or folder name at any depth (``*.tmp``, ``build``); a
pattern with ``/`` matches the whole path from the folder's top
(``docs/*.pdf``, ``/notes.txt``); ``**`` matches any number of folders;
a pattern ending in ``/`` matches folders only; whatever is inside an ignored
folder is ignored too.
"""

from __future__ import annotations

import base64
import functools
import re
import time
import unicodedata
from collections.abc import Iterable
from typing import Final

import attrs

from common.errors import ValidationError

__all__ = [
    "STATE_FOLDER",
    "IGNORE_FILE",
    "MAX_PATH_BYTES",
    "check_relative_path",
    "portability_problems",
    "case_collisions",
    "IgnoreRules",
    "conflict_name",
    "is_conflict_copy",
    "short_node",
]

#: The folder inside a synced folder where a node keeps its index and its downloads in progress; never synced.
STATE_FOLDER: Final = ".chunkswarm"
#: The ignore file at a synced folder's top; it is synced like any file.
IGNORE_FILE: Final = ".chunkswarmignore"
MAX_PATH_BYTES: Final = 4096

_WINDOWS_RESERVED: Final = frozenset(
    ["CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))]
)
_WINDOWS_CHARS: Final = frozenset('<>:"|?*')


def check_relative_path(path: str) -> str:
    """``path`` if it names a place inside a synced folder; a :class:`ValidationError` saying why not otherwise."""
    if not isinstance(path, str) or not path:
        raise ValidationError("a synced path must be non-empty text")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ValidationError(f"synced path longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise ValidationError(f"synced path {path!r} is absolute")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValidationError(f"synced path {path!r} has an empty, '.' or '..' segment")
        if segment.isascii() and segment.isprintable() and "\\" not in segment:
            continue  # the common case, without a look-up per character
        for char in segment:
            if char == "\\" or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
                raise ValidationError(f"synced path {path!r} contains a backslash or control character")
    if path == STATE_FOLDER or path.startswith(STATE_FOLDER + "/"):
        raise ValidationError(f"synced path {path!r} is inside the state folder {STATE_FOLDER}")
    return path


def portability_problems(path: str) -> list[str]:
    """Why ``path`` could not be written as it is on Windows or macOS (empty if it could): reported, not mangled."""
    problems = []
    for segment in path.split("/"):
        stem = segment.split(".", 1)[0].upper()
        if stem in _WINDOWS_RESERVED:
            problems.append(f"{segment!r} is a reserved name on Windows")
        bad = sorted(set(segment) & _WINDOWS_CHARS)
        if bad:
            problems.append(f"{segment!r} contains {' '.join(bad)}, not allowed on Windows" + (" (nor ':' on macOS)" if ":" in bad else ""))
        if segment.endswith((".", " ")):
            problems.append(f"{segment!r} ends in a dot or space, which Windows drops")
    return problems


@functools.lru_cache(maxsize=1 << 17)  # every scan folds the same paths again
def _folded(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def case_collisions(paths: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of paths that differ only in case (or Unicode normalization): one file on macOS and Windows."""
    seen: dict[str, str] = {}
    pairs = []
    for path in paths:
        key = _folded(path)
        if key in seen and seen[key] != path:
            pairs.append((seen[key], path))
        else:
            seen[key] = path
    return pairs


def _segment_regex(pattern: str) -> str:
    """A glob over whole paths as a regex: ``*`` and ``?`` stay inside one segment, ``**`` crosses them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@attrs.frozen
class _Rule:
    regex: re.Pattern[str]
    anchored: bool
    folders_only: bool


@attrs.frozen
class IgnoreRules:
    """The patterns of a ``.chunkswarmignore`` (see the module docstring); :meth:`ignored` answers for one path."""

    rules: tuple[_Rule, ...] = ()

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            folders_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line
            line = line.lstrip("/")
            if not line:
                continue
            rules.append(_Rule(re.compile(_segment_regex(line) + r"\Z"), anchored, folders_only))
        return cls(tuple(rules))

    def ignored(self, path: str, *, is_dir: bool = False) -> bool:
        """True if ``path`` (relative, POSIX), or a folder above it, matches a pattern; the state folder always is."""
        if path == STATE_FOLDER or path.startswith(STATE_FOLDER + "/"):
            return True
        if not self.rules:
            return False
        segments = path.split("/")
        for depth in range(1, len(segments) + 1):
            if self.matches("/".join(segments[:depth]), segments[depth - 1], is_dir=depth < len(segments) or is_dir):
                return True
        return False

    def matches(self, path: str, name: str, *, is_dir: bool) -> bool:
        """True if a pattern matches ``path`` itself (``name`` is its last segment), its folders not looked at.

        A scan asks this of each entry of a folder it did not find ignored: one test, not one per folder above.
        """
        for rule in self.rules:
            if rule.folders_only and not is_dir:
                continue
            if rule.regex.match(path if rule.anchored else name):
                return True
        return False


def short_node(node: bytes) -> str:
    """How a conflict copy names a node: the first 7 base32 characters, as ``chunkswarm id`` shows its short id."""
    return base64.b32encode(node).decode("ascii")[:7] if node else "UNKNOWN"


def conflict_name(path: str, mtime_ns: int, node: bytes) -> str:
    """Syncthing's name for the losing copy: ``NAME.sync-conflict-YYYYMMDD-HHMMSS-NODE.ext`` (UTC), in the same folder."""
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a dot file such as ".profile"
        stem, dot, ext = name, "", ""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(mtime_ns // 1_000_000_000))
    renamed = f"{stem}.sync-conflict-{stamp}-{short_node(node)}{dot}{ext}"
    return f"{folder}/{renamed}" if folder else renamed


_CONFLICT: Final = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Z2-7]{7}(\.|$)")


def is_conflict_copy(path: str) -> bool:
    return bool(_CONFLICT.search(path.rpartition("/")[2]))

