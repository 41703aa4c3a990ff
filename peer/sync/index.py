"""A synced folder's local index, kept in its state folder (``.chunkswarm/index``): what this node's folder reflects.

For every path synced: the collection :class:`~common.collection.Entry` the
file on disk is (tombstones too, until the collection drops them), the
:class:`~peer.sync.fsops.Stat` recorded when it was last scanned or written
(so an unchanged file is never hashed again, and a file changed under our
feet is never overwritten), the paths changed here and not yet published
(``dirty``), and the root and sequence of the collection version last merged.

Saved as one MessagePack file, written atomically (a temporary file, then a
rename): a node killed at any moment finds the last saved index, at worst a
little behind its folder, and a rescan catches up.
"""

from __future__ import annotations

import logging
import os
import pathlib
import stat as stat_module
from collections.abc import Iterable
from typing import Any

import attrs
import msgpack

from common.collection import Entry
from common.errors import ValidationError
from common.sync_rules import STATE_FOLDER
from peer.storage.fs import atomic_write
from peer.sync.fsops import Stat

__all__ = ["Index", "index_path"]

logger = logging.getLogger(__name__)

_FORMAT = 1


def index_path(root: pathlib.Path) -> pathlib.Path:
    return root / STATE_FOLDER / "index"


def _entry_record(entry: Entry) -> list[Any]:
    return [entry.path, entry.size, entry.file_id, entry.mode, entry.mtime_ns, entry.deleted,
            [[node, counter] for node, counter in entry.version], entry.modified_by]  # fmt: skip


def _entry_of(record: list[Any]) -> Entry:
    path, size, file_id, mode, mtime_ns, deleted, version, modified_by = record
    return Entry(path=path, size=size, file_id=file_id, mode=mode, mtime_ns=mtime_ns, deleted=deleted,
                 version=tuple((bytes(node), int(counter)) for node, counter in version), modified_by=modified_by)  # fmt: skip


@attrs.define(eq=False)
class Index:
    """See the module docstring."""

    entries: dict[str, Entry] = attrs.field(factory=dict)
    stats: dict[str, Stat] = attrs.field(factory=dict)
    dirty: set[str] = attrs.field(factory=set)
    root: bytes = b""
    sequence: int = 0

    def record(self, entry: Entry, stat: Stat | None, *, dirty: bool) -> None:
        """``entry`` is what the folder holds at its path now (``stat``: its file's, None for a tombstone)."""
        self.entries[entry.path] = entry
        if stat is None:
            self.stats.pop(entry.path, None)
        else:
            self.stats[entry.path] = stat
        if dirty:
            self.dirty.add(entry.path)
        else:
            self.dirty.discard(entry.path)

    def forget(self, path: str) -> None:
        self.entries.pop(path, None)
        self.stats.pop(path, None)
        self.dirty.discard(path)

    def on_disk_as_recorded(self, folder: pathlib.Path, paths: Iterable[str]) -> bool:
        """True if each of ``paths`` is on disk as last recorded (blocking): a regular file of its recorded stat, or none.

        What tells a file-system event of this node's own write or removal from someone's change. A
        folder, a link or a path unreadable is never "as recorded": it asks for a scan.
        """
        for path in paths:
            try:
                st = os.lstat(folder / path)
            except FileNotFoundError:
                if path in self.stats:
                    return False
                continue
            except OSError:
                return False
            if not stat_module.S_ISREG(st.st_mode) or self.stats.get(path) != Stat.of(st):
                return False
        return True

    def content_paths(self) -> dict[bytes, list[str]]:
        """For each file id held here (as last scanned or written), the paths that have it."""
        out: dict[bytes, list[str]] = {}
        for path, entry in self.entries.items():
            if not entry.deleted and path in self.stats:
                out.setdefault(entry.file_id, []).append(path)
        return out

    def save(self, folder: pathlib.Path) -> None:
        data = {
            "format": _FORMAT,
            "root": self.root,
            "sequence": self.sequence,
            "entries": [_entry_record(entry) for entry in self.entries.values()],
            "stats": {path: [s.size, s.mtime_ns, s.mode, s.ino] for path, s in self.stats.items()},
            "dirty": sorted(self.dirty),
        }
        path = index_path(folder)
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, msgpack.packb(data, use_bin_type=True))

    @classmethod
    def load(cls, folder: pathlib.Path) -> Index:
        """The saved index of ``folder``; an empty one if there is none (or it cannot be read: a rescan rebuilds it)."""
        path = index_path(folder)
        try:
            data = msgpack.unpackb(path.read_bytes(), raw=False)
            if data.get("format") != _FORMAT:
                raise ValidationError(f"unknown index format {data.get('format')!r}")
            entries = {entry.path: entry for entry in map(_entry_of, data["entries"])}
            stats = {p: Stat(*s) for p, s in data["stats"].items()}
            return cls(entries, stats, set(data["dirty"]), bytes(data["root"]), int(data["sequence"]))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, KeyError, ValidationError, msgpack.UnpackException) as exc:
            logger.warning("%s: cannot read the sync index (%s); the folder is scanned from scratch", path, exc)
            return cls()
