"""The catalogue's look-up index: files by exact name and by file id prefix (capability ``lookup``, PROTOCOL.md §8.6).

A LOOKUP costs O(log n + matches), whatever the size of the catalogue: names
map to their files in publish order, and file ids are kept sorted, so the ids
that start with a prefix are one bisection away and lie side by side.

Ids are sorted lazily: a publish appends to a pending list, and the next
look-up (or removal) merges it, one ``insort`` each for a few, one sort for
many (loading a catalogue of 200,000 files is one sort, not 200,000 inserts).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from operator import attrgetter
from typing import Final

from common.lookup_messages import is_id_prefix
from tracker.records import FileRecord

__all__ = ["CatalogueIndex"]

_SEQ: Final = attrgetter("seq")
#: Pending ids up to this many are inserted one by one; more are merged by one sort.
_INSERT_MAX: Final = 64


class CatalogueIndex:
    """Names and sorted file ids of the records in a catalogue."""

    def __init__(self) -> None:
        self._names: dict[str, list[FileRecord]] = {}
        self._ids: list[bytes] = []
        self._pending: list[bytes] = []
        self._records: dict[bytes, FileRecord] = {}

    def add(self, record: FileRecord) -> None:
        file_id = record.manifest.file_id
        self._records[file_id] = record
        self._names.setdefault(record.manifest.name, []).append(record)
        self._pending.append(file_id)

    def remove(self, record: FileRecord) -> None:
        manifest = record.manifest
        del self._records[manifest.file_id]
        named = self._names[manifest.name]
        named.remove(record)
        if not named:
            del self._names[manifest.name]
        ids = self._sorted()
        del ids[bisect.bisect_left(ids, manifest.file_id)]

    def find(self, query: str, limit: int) -> tuple[list[FileRecord], int]:
        """The newest ``limit`` records named ``query`` or whose id starts with ``query`` (hex digits), and how many more match."""
        named = self._names.get(query, [])
        prefixed = self._with_prefix(query.lower()) if is_id_prefix(query) else []
        if not prefixed:
            # Publish order is newest last: the newest few are at hand, however many share the name.
            return named[: -limit - 1 : -1], max(0, len(named) - limit)
        records: Iterable[FileRecord] = map(self._records.__getitem__, prefixed)
        total = len(prefixed)
        if named:  # each file once: a name may look like an id prefix, even its own file's
            matches = {record.manifest.file_id: record for record in named}
            matches.update(zip(prefixed, records))
            records, total = matches.values(), len(matches)
        chosen = heapq.nlargest(limit, records, key=_SEQ)
        return chosen, total - len(chosen)

    def _with_prefix(self, prefix: str) -> list[bytes]:
        """The ids that start with the hex digits ``prefix``: every id between the prefix padded with 0s and with fs."""
        ids = self._sorted()
        low = bisect.bisect_left(ids, bytes.fromhex(prefix.ljust(64, "0")))
        high = bisect.bisect_right(ids, bytes.fromhex(prefix.ljust(64, "f")), lo=low)
        return ids[low:high]

    def _sorted(self) -> list[bytes]:
        pending = self._pending
        if pending:
            if len(pending) <= _INSERT_MAX:
                for file_id in pending:
                    bisect.insort(self._ids, file_id)
            else:
                self._ids.extend(pending)
                self._ids.sort()
            pending.clear()
        return self._ids
