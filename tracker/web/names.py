"""The web UI's search over names: the catalogue's case-folded names joined into one string, searched at C speed.

A search of the API must answer over 100,000 files in well under 50 ms,
whatever it matches. Looking at every record in Python costs ~100 ns a name
and more on a loaded machine, so :class:`NameSearch` keeps, beside the
registry, what a substring search needs and nothing more: the records in
publish order (the registry's own objects, not copies), their folded names
(the registry's strings) and those names joined with NUL separators (a name
holds no control character, a query no NUL: a match never spans two names).

* ``str.count`` over the joined names (one C call, ~1 ms for 100,000) tells
  a query that matches nothing, or only a few names: those are found with
  ``str.rfind`` from the end, newest first, one step per match;
* a query that matches many names is tested name by name with
  ``operator.contains`` under ``map`` and ``itertools.compress`` (C loops),
  in slices of :data:`SLICE` names, yielding to the protocol between slices;
* the empty query matches every file: no scan at all.

The index follows the catalogue through ``CatalogueIndex.added``/``removed``:
files published since the last search are appended (O(new files)); a file
removed (retention, unpublish) means one rebuild, in slices too.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence
from typing import Final

import trio

from tracker.index import CatalogueIndex
from tracker.records import FileRecord

__all__ = ["NameSearch", "SLICE", "FEW"]

#: Names tested, or indexed, between two yields to the protocol's connections (~1 ms).
SLICE: Final = 20_000
#: Up to this many occurrences, matches are found one ``rfind`` at a time; beyond, name by name.
FEW: Final = 2_000
_SEPARATOR: Final = "\0"


class NameSearch:
    """Substring search over the folded names of the files listed in a :class:`CatalogueIndex`."""

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self._reset()

    def _reset(self) -> None:
        # New lists on a rebuild (never cleared in place): a search holds on to the ones it started with.
        self.records: list[FileRecord] = []
        self._names: list[str] = []
        self._seqs: list[int] = []
        self._starts: list[int] = []
        self._text = ""
        self._version = (0, 0)

    async def refresh(self, index: CatalogueIndex) -> None:
        """Catch up with the catalogue: append what was published since, or rebuild after a removal."""
        async with self._lock:
            added, removed = index.added, index.removed
            if (added, removed) == self._version:
                return
            if removed != self._version[1]:
                self._reset()
                fresh = index.newest(added - removed)
            else:
                fresh = index.newest(added - self._version[0])
            for start in range(0, len(fresh), SLICE):
                self._append(fresh[start : start + SLICE])
                if start + SLICE < len(fresh):
                    await trio.lowlevel.checkpoint()
            self._version = (added, removed)

    def _append(self, records: Sequence[FileRecord]) -> None:
        offset = len(self._text)
        names = [record.folded_name for record in records]
        for name in names:
            self._starts.append(offset)
            offset += len(name) + 1
        self._names += names
        self._seqs += [record.seq for record in records]
        self.records += records
        self._text += _SEPARATOR.join(names) + _SEPARATOR

    async def find(self, query: str, by_id: Sequence[FileRecord] = ()) -> tuple[list[FileRecord], Sequence[int]]:
        """The records searched and the positions in them of those matching, newest first.

        A match: a name containing ``query`` (case-insensitive), or one of
        ``by_id`` (the files whose id starts with the query, from the index).
        """
        records, names, seqs, starts, text = self.records, self._names, self._seqs, self._starts, self._text
        count = len(records)  # what was indexed when the search began; later appends are not its business
        folded = query.casefold()
        positions: Sequence[int]
        if not folded:
            return records, range(count - 1, -1, -1)
        occurrences = text.count(folded, 0, starts[count - 1] + len(names[count - 1]) if count else 0)
        if occurrences == 0:
            positions = []
        elif occurrences <= FEW:
            found: list[int] = []
            end = len(text) if count == len(starts) else starts[count]
            while (at := text.rfind(folded, 0, end)) >= 0:
                position = bisect.bisect_right(starts, at) - 1
                found.append(position)
                end = starts[position]
            positions = found
        else:
            found = []
            for low in range(0, count, SLICE):
                high = min(count, low + SLICE)
                tested = map(operator.contains, itertools.islice(names, low, high), itertools.repeat(folded))
                found += itertools.compress(range(low, high), tested)
                await trio.lowlevel.checkpoint()
            found.reverse()
            positions = found
        if by_id:
            merged = set(positions)
            for record in by_id:
                position = bisect.bisect_left(seqs, record.seq, 0, count)
                if position < count and records[position] is record:
                    merged.add(position)
            positions = sorted(merged, reverse=True)
        return records, positions
