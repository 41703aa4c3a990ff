"""ChunkSet: a bitmask of chunk indexes and its two wire forms (ranges, MSB-first bitfield)."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from common.chunkset import ChunkSet
from common.errors import ValidationError


@st.composite
def chunk_sets(draw: st.DrawFn, max_count: int = 300) -> tuple[int, set[int]]:
    count = draw(st.integers(0, max_count))
    indexes = draw(st.sets(st.integers(0, count - 1), max_size=count)) if count else set()
    return count, indexes


@given(chunk_sets())
def test_indexes_round_trip(case: tuple[int, set[int]]) -> None:
    count, indexes = case
    chunk_set = ChunkSet.from_indexes(count, indexes)
    assert list(chunk_set) == sorted(indexes)
    assert len(chunk_set) == len(indexes)
    assert all(i in chunk_set for i in indexes)
    assert not any(i in chunk_set for i in set(range(-2, count + 2)) - indexes)
    assert chunk_set.complete == (len(indexes) == count)
    assert set(chunk_set.missing()) == set(range(count)) - indexes


@given(chunk_sets())
def test_ranges_round_trip(case: tuple[int, set[int]]) -> None:
    count, indexes = case
    chunk_set = ChunkSet.from_indexes(count, indexes)
    ranges = chunk_set.ranges()
    # Half-open, ascending, non-empty, and maximal (separated by at least one gap).
    previous_stop = -1
    for start, stop in ranges:
        assert previous_stop < start < stop <= count
        previous_stop = stop
    assert {i for start, stop in ranges for i in range(start, stop)} == indexes
    assert ChunkSet.from_ranges(count, ranges) == chunk_set


@given(chunk_sets())
def test_bitfield_round_trip_msb_first(case: tuple[int, set[int]]) -> None:
    count, indexes = case
    chunk_set = ChunkSet.from_indexes(count, indexes)
    bitfield = chunk_set.bitfield()
    assert len(bitfield) == (count + 7) // 8
    # Bit i is bit (7 - i % 8) of byte i // 8: the high bit of byte 0 is chunk 0.
    assert {i for i in range(len(bitfield) * 8) if bitfield[i // 8] >> (7 - i % 8) & 1} == indexes
    assert ChunkSet.from_bitfield(count, bitfield) == chunk_set


def test_bitfield_known_bytes() -> None:
    assert ChunkSet.from_indexes(10, [0, 7, 8]).bitfield() == bytes([0b1000_0001, 0b1000_0000])
    assert ChunkSet.full(10).bitfield() == b"\xff\xc0"
    assert ChunkSet.from_bitfield(3, b"\xa0") == ChunkSet.from_indexes(3, [0, 2])
    assert ChunkSet(0).bitfield() == b""


@given(chunk_sets(), st.sampled_from([-2, -1, 1, 2]))
def test_bitfield_of_the_wrong_length(case: tuple[int, set[int]], extra: int) -> None:
    count, indexes = case
    bitfield = ChunkSet.from_indexes(count, indexes).bitfield()
    assume(len(bitfield) + extra >= 0)
    wrong = bitfield + bytes(extra) if extra > 0 else bitfield[:extra]
    with pytest.raises(ValidationError):
        ChunkSet.from_bitfield(count, wrong)


@given(st.integers(1, 300).filter(lambda n: n % 8), st.data())
def test_bitfield_with_spare_bits_set(count: int, data: st.DataObject) -> None:
    spare = data.draw(st.integers(count, (count + 7) // 8 * 8 - 1))
    bitfield = bytearray(ChunkSet.full(count).bitfield())
    bitfield[spare // 8] |= 1 << (7 - spare % 8)
    with pytest.raises(ValidationError, match="spare"):
        ChunkSet.from_bitfield(count, bytes(bitfield))


@pytest.mark.parametrize("ranges", [((0, 0),), ((3, 2),), ((-1, 2),), ((0, 11),), ((10, 11),)])
def test_bad_ranges(ranges: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValidationError):
        ChunkSet.from_ranges(10, ranges)


def test_overlapping_ranges_are_merged() -> None:
    assert ChunkSet.from_ranges(10, ((4, 8), (0, 2), (1, 5))).ranges() == ((0, 8),)


@given(st.integers(1, 3000), st.data())
def test_many_ranges_make_the_same_set_as_their_indexes(count: int, data: st.DataObject) -> None:
    # Above 64 ranges the set is built through a byte buffer (linear in the file size).
    cuts = sorted(data.draw(st.sets(st.integers(0, count), min_size=2, max_size=300)))
    ranges = tuple((cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2))
    indexes = [i for start, stop in ranges for i in range(start, stop)]
    assert ChunkSet.from_ranges(count, ranges) == ChunkSet.from_indexes(count, indexes)
    assert ChunkSet.from_ranges(count, ranges[::-1] + ranges[:3]) == ChunkSet.from_indexes(count, indexes)  # any order, overlaps


def test_many_ranges_are_checked_too() -> None:
    many = tuple((i, i + 1) for i in range(0, 200, 2))
    with pytest.raises(ValidationError):
        ChunkSet.from_ranges(100, many)


def test_construction_and_mutation_checks() -> None:
    with pytest.raises(ValidationError):
        ChunkSet(-1)
    with pytest.raises(ValidationError):
        ChunkSet(3, 0b1000)
    with pytest.raises(ValidationError):
        ChunkSet(3, -1)
    chunk_set = ChunkSet(3)
    for index in (-1, 3):
        with pytest.raises(ValidationError):
            chunk_set.add(index)
        chunk_set.discard(index)  # a no-op
    with pytest.raises(ValidationError):
        chunk_set.update(ChunkSet(4))
    assert "x" not in chunk_set


def test_full_empty_copy_update() -> None:
    assert ChunkSet.full(0).complete and ChunkSet(0).complete
    assert list(ChunkSet.full(5)) == [0, 1, 2, 3, 4]
    assert ChunkSet.full(5).ranges() == ((0, 5),)
    chunk_set = ChunkSet.from_indexes(8, [1])
    copy = chunk_set.copy()
    copy.add(2)
    assert list(chunk_set) == [1] and list(copy) == [1, 2]
    chunk_set.update(ChunkSet.from_indexes(8, [5, 6]))
    chunk_set.discard(1)
    assert chunk_set.ranges() == ((5, 7),)
    assert repr(chunk_set) == "ChunkSet(8, ranges=((5, 7),))"
    assert chunk_set != copy and chunk_set != ChunkSet.from_indexes(9, [5, 6])
