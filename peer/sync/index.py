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
import pathlib
from collections.abc import Callable
from typing import Any

import attrs
import msgpack

from common.collection import Entry
from common.errors import StorageError, ValidationError
from common.sync_rules import STATE_FOLDER
from peer.sync.fsops import Stat
from peer.sync.state import StateFolder

__all__ = ["Index", "INDEX_FILE", "index_path"]

logger = logging.getLogger(__name__)

_FORMAT = 1
#: Its name in the state folder.
INDEX_FILE = "index"


def index_path(root: pathlib.Path) -> pathlib.Path:
    return root / STATE_FOLDER / INDEX_FILE


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

    def content_paths(self) -> dict[bytes, list[str]]:
        """For each file id held here (as last scanned or written), the paths that have it."""
        out: dict[bytes, list[str]] = {}
        for path, entry in self.entries.items():
            if not entry.deleted and path in self.stats:
                out.setdefault(entry.file_id, []).append(path)
        return out

    def encoder(self) -> Callable[[], bytes]:
        """What the index holds now, to be encoded by the function returned (in a worker thread).

        The copies are taken here, on the event loop, which goes on changing
        the index while a thread encodes: iterating the live dicts there could
        fail ("dictionary changed size during iteration") or mix two moments.
        Shallow copies of the containers are enough (entries and stats are frozen).
        """
        entries, stats, dirty = list(self.entries.values()), dict(self.stats), list(self.dirty)
        root, sequence = self.root, self.sequence

        def encode() -> bytes:
            data = {
                "format": _FORMAT,
                "root": root,
                "sequence": sequence,
                "entries": [_entry_record(entry) for entry in entries],
                "stats": {path: [s.size, s.mtime_ns, s.mode, s.ino] for path, s in stats.items()},
                "dirty": sorted(dirty),
            }
            return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]

        return encode

    @classmethod
    def decode(cls, data: bytes | None, where: object) -> Index:
        """The index saved as ``data`` (None: none saved); an empty one if it cannot be read (a rescan rebuilds it)."""
        if data is None:
            return cls()
        try:
            saved = msgpack.unpackb(data, raw=False)
            if saved.get("format") != _FORMAT:
                raise ValidationError(f"unknown index format {saved.get('format')!r}")
            entries = {entry.path: entry for entry in map(_entry_of, saved["entries"])}
            stats = {p: Stat(*s) for p, s in saved["stats"].items()}
            return cls(entries, stats, set(saved["dirty"]), bytes(saved["root"]), int(saved["sequence"]))
        except (AttributeError, ValueError, TypeError, KeyError, ValidationError, msgpack.UnpackException) as exc:
            logger.warning("%s: cannot read the sync index (%s); the folder is scanned from scratch", where, exc)
            return cls()

    @classmethod
    def read(cls, state: StateFolder) -> Index:
        """The index saved in ``state`` (read beneath the synced folder); an empty one if there is none or it cannot be read."""
        try:
            data = state.read(INDEX_FILE)
        except StorageError as exc:  # (a link, say: never followed, and replaced by the first save)
            logger.warning("%s: cannot read the sync index (%s); the folder is scanned from scratch", state.path, exc)
            data = None
        return cls.decode(data, state.path / INDEX_FILE)

    @classmethod
    def load(cls, folder: pathlib.Path) -> Index:
        """The index saved in the synced folder ``folder``, read by path: for a stopped node's folder (tests, tools).

        A running sync reads and writes it beneath the folder (``peer/sync/state.py``).
        """
        path = index_path(folder)
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            logger.warning("%s: cannot read the sync index (%s); the folder is scanned from scratch", path, exc)
            data = None
        return cls.decode(data, path)
