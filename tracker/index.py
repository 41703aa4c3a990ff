"""The catalogue's look-up index: files by exact name and by file id prefix (capability ``lookup``, PROTOCOL.md §8.9).

A LOOKUP costs O(log files + matches), whatever the size of the catalogue:
names map to their files in publish order, and file ids are kept in buckets by
their first two bytes, each bucket sorted. An id prefix of four hex digits or
more is one bucket and two bisections; a shorter one is the 16 to 4,096
buckets it covers, every id of which matches. A bucket holds a few ids (3 in a
catalogue of 200,000 with ids as SHA-256 makes them), so adding or removing a
file costs O(1) in practice, where one sorted list of every id would move
megabytes per publish and need seconds of sorting to load a catalogue.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterable
from operator import attrgetter
from typing import Final

from common.lookup_messages import is_id_prefix
from tracker.records import FileRecord

__all__ = ["CatalogueIndex"]

_SEQ: Final = attrgetter("seq")
#: Hex digits of an id that pick its bucket (two bytes).
_BUCKET_DIGITS: Final = 4


class CatalogueIndex:
    """Names and file ids of the records in a catalogue."""

    def __init__(self) -> None:
        self._names: dict[str, list[FileRecord]] = {}
        self._buckets: dict[bytes, list[bytes]] = {}
        self._records: dict[bytes, FileRecord] = {}  # in the order added: publish order
        #: Records ever added and removed: a reader that keeps something derived (the web UI's
        #: name search, ``tracker/web/names.py``) knows it is up to date while both are unchanged.
        self.added = 0
        self.removed = 0

    def newest(self, count: int) -> list[FileRecord]:
        """The ``count`` records added last, oldest first. O(count)."""
        chosen = list(itertools.islice(reversed(self._records.values()), count))
        chosen.reverse()
        return chosen

    def add(self, record: FileRecord) -> None:
        self.added += 1
        manifest = record.manifest
        self._records[manifest.file_id] = record
        self._names.setdefault(manifest.name, []).append(record)
        bisect.insort(self._buckets.setdefault(manifest.file_id[:2], []), manifest.file_id)

    def remove(self, record: FileRecord) -> None:
        self.removed += 1
        manifest = record.manifest
        del self._records[manifest.file_id]
        named = self._names[manifest.name]
        named.remove(record)
        if not named:
            del self._names[manifest.name]
        bucket = self._buckets[manifest.file_id[:2]]
        del bucket[bisect.bisect_left(bucket, manifest.file_id)]
        if not bucket:
            del self._buckets[manifest.file_id[:2]]

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
            matches.update(zip(prefixed, records, strict=True))
            records, total = matches.values(), len(matches)
        chosen = heapq.nlargest(limit, records, key=_SEQ)
        return chosen, total - len(chosen)

    def _with_prefix(self, prefix: str) -> list[bytes]:
        """The ids that start with the hex digits ``prefix``."""
        buckets = self._buckets
        if len(prefix) >= _BUCKET_DIGITS:
            bucket = buckets.get(bytes.fromhex(prefix[:_BUCKET_DIGITS]), [])
            # Every id between the prefix padded with 0s and the prefix padded with fs.
            low = bisect.bisect_left(bucket, bytes.fromhex(prefix.ljust(64, "0")))
            high = bisect.bisect_right(bucket, bytes.fromhex(prefix.ljust(64, "f")), lo=low)
            return bucket[low:high]
        first = int(prefix.ljust(_BUCKET_DIGITS, "0"), 16)
        found: list[bytes] = []
        for key in range(first, first + 16 ** (_BUCKET_DIGITS - len(prefix))):
            found += buckets.get(key.to_bytes(2, "big"), ())
        return found
