"""A peer's slots in the files it holds, as two arrays of machine words (keys sorted) rather than a dict (issue 16).

A tracker keeps, for every peer, the slot it has in the holder list of each
file it holds (``tracker.registry``): with 100 files a peer, a dict of file
id -> slot was 4.6 KB per peer, the largest cost after the bitfields
themselves. A :class:`SlotMap` keeps the keys in an ``array('I')`` in
ascending order and the slots in another, index for index: 8 bytes an entry,
1 KB for 100 files. The key is the file's publish number in its registry
(``FileRecord.seq``), so a peer's newest files go at the end.

Costs: a look-up is a bisection (O(log n); the keys are small ints, so the
probes compare without allocating), about 0.2 us for 100 entries where a
dict took 0.05 us; adding or removing an entry moves the entries after it
(O(n) machine words, a ``memmove``), at most a peer's file count. A key or a
slot of 2**32 or more does not fit: the array refuses it (``OverflowError``).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from typing import overload

__all__ = ["SlotMap"]


class SlotMap:
    """Key (a file's ``seq``) -> slot (its place in that file's holder list), both below 2**32."""

    __slots__ = ("_keys", "_slots")

    def __init__(self) -> None:
        self._keys = array("I")
        self._slots = array("I")

    def _find(self, key: int) -> int:
        """The index of ``key``'s entry, or -1."""
        keys = self._keys
        i = bisect_left(keys, key)
        return i if i < len(keys) and keys[i] == key else -1

    @overload
    def get(self, key: int) -> int | None: ...
    @overload
    def get(self, key: int, default: int) -> int: ...
    def get(self, key: int, default: int | None = None) -> int | None:
        """The slot of ``key``, or ``default``."""
        keys = self._keys  # inline, not _find: a look-up per ANNOUNCE and per WHO_HAS
        i = bisect_left(keys, key)
        return self._slots[i] if i < len(keys) and keys[i] == key else default

    def __getitem__(self, key: int) -> int:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        return self._slots[i]

    def __setitem__(self, key: int, slot: int) -> None:
        keys = self._keys
        i = bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            self._slots[i] = slot
        elif i == len(keys):  # the usual case: the newest file
            keys.append(key)
            self._append_slot(slot)
        else:
            keys.insert(i, key)
            try:
                self._slots.insert(i, slot)
            except OverflowError:
                del keys[i]  # a slot that does not fit leaves the map as it was
                raise

    def _append_slot(self, slot: int) -> None:
        try:
            self._slots.append(slot)
        except OverflowError:
            del self._keys[-1]  # a slot that does not fit leaves the map as it was
            raise

    def __delitem__(self, key: int) -> None:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        del self._keys[i], self._slots[i]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and self._find(key) >= 0

    def __len__(self) -> int:
        return len(self._keys)

    def items(self) -> Iterator[tuple[int, int]]:
        """(key, slot) in key order, over a copy: the caller may change the map meanwhile."""
        return zip(self._keys.tolist(), self._slots.tolist(), strict=True)

    def clear(self) -> None:
        self._keys = array("I")
        self._slots = array("I")

    def __repr__(self) -> str:
        return f"SlotMap({dict(self.items())!r})"
