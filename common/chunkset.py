"""Sets of chunk indexes, stored as one Python int used as a bitmask.

A tracker keeps one of these per (peer, file): 1000 peers x 100 files x 1000
chunks is 100,000 sets of ~130 bytes each, where sets of ints would take
gigabytes. On the wire a set travels either as half-open ranges (cheap for
"everything" and for a few new chunks) or as a bitfield (cheap for scattered
holdings; bit 0 is the high bit of byte 0, as in BitTorrent's BITFIELD).

A scheduler testing single chunks over and over keeps a set as *flags* too,
one byte per chunk (:func:`mask_flags`): testing a bit of a 500,000-bit
integer costs as much as copying it, indexing a bytearray nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import compress
from typing import Final

from common.errors import ValidationError

__all__ = ["ChunkSet", "Ranges", "mask_to_bitfield", "bitfield_to_mask", "mask_flags", "flags_mask", "mask_indexes"]

Ranges = tuple[tuple[int, int], ...]

#: Bytes that reverse the bit order of a byte; bitfields are MSB-first on the
#: wire while int.to_bytes is LSB-first within the integer.
_REVERSE: Final = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
#: Above this many ranges a set is built through a byte buffer rather than by
#: OR-ing big ints, which copies the whole mask per range (quadratic in the file size).
_MANY_RANGES: Final = 64


def mask_to_bitfield(mask: int, count: int) -> bytes:
    """The MSB-first bitfield of ``count`` chunks whose set bits are ``mask``'s (no checks: see :meth:`ChunkSet.from_bitfield`)."""
    return mask.to_bytes((count + 7) // 8, "little").translate(_REVERSE)


def bitfield_to_mask(bitfield: bytes) -> int:
    """The mask of an MSB-first bitfield, the inverse of :func:`mask_to_bitfield` (no checks)."""
    return int.from_bytes(bitfield.translate(_REVERSE), "little")


#: Maps the digits of ``bin(mask)`` to flag bytes 0 and 1.
_BITS: Final = bytes.maketrans(b"01", b"\0\1")


def mask_flags(mask: int, count: int) -> bytearray:
    """``mask`` as one byte per chunk (0 or 1): O(1) membership tests, unlike ``mask >> i & 1``."""
    return bytearray(bin(mask)[:1:-1].encode("ascii").translate(_BITS).ljust(count, b"\0"))


def flags_mask(flags: bytes | bytearray, digits: bytes) -> int:
    """The mask of the chunks whose flag ``digits`` (a ``bytes.maketrans`` table) turns into ``b"1"``, the others into ``b"0"``."""
    return int(flags[::-1].translate(digits) or b"0", 2)


def mask_indexes(mask: int) -> list[int]:
    """The set bits of ``mask``, lowest first, in linear time (iterating a ChunkSet is quadratic)."""
    flags = bin(mask)[:1:-1].encode("ascii").translate(_BITS)
    return list(compress(range(len(flags)), flags))


def _mask_through_bytes(count: int, ranges: Ranges) -> int:
    """The bitmask of ``ranges`` (bit i = chunk i), linear in ``count`` whatever the number of ranges."""
    buffer = bytearray((count + 7) // 8)  # little-endian: bit i is bit i % 8 of byte i // 8
    for start, stop in ranges:
        if not 0 <= start < stop <= count:
            raise ValidationError(f"chunk range [{start}, {stop}) outside 0..{count}")
        first, last = start >> 3, (stop - 1) >> 3
        if first == last:
            buffer[first] |= ((1 << (stop - start)) - 1) << (start & 7)
            continue
        buffer[first] |= (0xFF << (start & 7)) & 0xFF
        buffer[first + 1 : last] = b"\xff" * (last - first - 1)
        buffer[last] |= (1 << ((stop - 1) & 7) + 1) - 1
    return int.from_bytes(buffer, "little")


class ChunkSet:
    """A mutable set of chunk indexes in ``range(count)``."""

    __slots__ = ("count", "mask")
    #: Mutable, so not hashable (equality compares contents).
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, count: int, mask: int = 0) -> None:
        if count < 0:
            raise ValidationError(f"chunk count must be >= 0, got {count}")
        if mask < 0 or mask.bit_length() > count:
            raise ValidationError(f"chunk set mask has bits beyond chunk count {count}")
        self.count = count
        self.mask = mask

    # -- construction -------------------------------------------------------
    @classmethod
    def full(cls, count: int) -> ChunkSet:
        return cls(count, (1 << count) - 1)

    @classmethod
    def from_indexes(cls, count: int, indexes: Iterable[int]) -> ChunkSet:
        chunk_set = cls(count)
        for index in indexes:
            chunk_set.add(index)
        return chunk_set

    @classmethod
    def from_ranges(cls, count: int, ranges: Ranges) -> ChunkSet:
        """The chunks in ``ranges`` (half-open; overlaps and any order allowed), linear in ``count`` however many."""
        if len(ranges) > _MANY_RANGES:
            return cls(count, _mask_through_bytes(count, ranges))
        mask = 0
        for start, stop in ranges:
            if not 0 <= start < stop <= count:
                raise ValidationError(f"chunk range [{start}, {stop}) outside 0..{count}")
            mask |= ((1 << (stop - start)) - 1) << start
        return cls(count, mask)

    @classmethod
    def from_bitfield(cls, count: int, bitfield: bytes) -> ChunkSet:
        if len(bitfield) != (count + 7) // 8:
            raise ValidationError(f"bitfield of {len(bitfield)} bytes does not fit {count} chunks")
        mask = bitfield_to_mask(bitfield)
        if mask.bit_length() > count:
            raise ValidationError("bitfield has spare bits set")
        return cls(count, mask)

    # -- queries ------------------------------------------------------------
    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and 0 <= index < self.count and bool(self.mask >> index & 1)

    def __len__(self) -> int:
        return self.mask.bit_count()

    def __iter__(self) -> Iterator[int]:
        mask = self.mask
        while mask:
            low = mask & -mask
            yield low.bit_length() - 1
            mask ^= low

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkSet):
            return NotImplemented
        return self.count == other.count and self.mask == other.mask

    def __repr__(self) -> str:
        return f"ChunkSet({self.count}, ranges={self.ranges()!r})"

    @property
    def complete(self) -> bool:
        return self.mask == (1 << self.count) - 1

    def missing(self) -> ChunkSet:
        return ChunkSet(self.count, ((1 << self.count) - 1) & ~self.mask)

    def copy(self) -> ChunkSet:
        return ChunkSet(self.count, self.mask)

    # -- mutation -----------------------------------------------------------
    def add(self, index: int) -> None:
        if not 0 <= index < self.count:
            raise ValidationError(f"chunk index {index} outside 0..{self.count}")
        self.mask |= 1 << index

    def discard(self, index: int) -> None:
        if 0 <= index < self.count:
            self.mask &= ~(1 << index)

    def update(self, other: ChunkSet) -> None:
        if other.count != self.count:
            raise ValidationError(f"chunk sets of {other.count} and {self.count} chunks do not mix")
        self.mask |= other.mask

    # -- wire forms ---------------------------------------------------------
    def ranges(self) -> Ranges:
        """Half-open ``(start, stop)`` runs of set bits, ascending."""
        out: list[tuple[int, int]] = []
        mask = self.mask
        offset = 0
        while mask:
            # Skip the run of zeros, then measure the run of ones.
            zeros = (mask & -mask).bit_length() - 1
            mask >>= zeros
            offset += zeros
            ones = (~mask & (mask + 1)).bit_length() - 1
            out.append((offset, offset + ones))
            mask >>= ones
            offset += ones
        return tuple(out)

    def bitfield(self) -> bytes:
        return mask_to_bitfield(self.mask, self.count)
