"""The chunk size a sync node publishes a file with: a function of its size alone, the same on every node."""

from __future__ import annotations

import pytest

from common.manifest import MAX_CHUNK_SIZE, chunk_count_for, chunk_size_for
from peer.sync.fetch import SMALL_FILE, sync_chunk_size

MIB = 1024 * 1024


@pytest.mark.parametrize("size", [0, 1, 1000, 9 * 1024 + 1, SMALL_FILE - 1, SMALL_FILE])
def test_small_files_are_one_chunk(size: int) -> None:
    assert chunk_count_for(size, sync_chunk_size(size)) <= 1


@pytest.mark.parametrize("size", [SMALL_FILE + 1, 3 * MIB, 100 * MIB, 256 * MIB])
def test_files_up_to_256_mib_keep_1_mib_chunks(size: int) -> None:
    assert sync_chunk_size(size) == MIB


@pytest.mark.parametrize(("size", "chunk_size"), [(256 * MIB + 1, 2 * MIB), (512 * MIB, 2 * MIB), (1024 * MIB, 4 * MIB), (2048 * MIB, 4 * MIB),
                                                  (4096 * MIB, 4 * MIB)])  # fmt: skip
def test_larger_files_are_at_most_256_chunks_while_chunks_are_at_most_4_mib(size: int, chunk_size: int) -> None:
    # A 1 GiB file is 256 chunks of 4 MiB, not 1,024 of 1 MiB: each chunk costs both ends' event loops.
    assert sync_chunk_size(size) == chunk_size
    assert chunk_count_for(size, chunk_size) <= min(256, chunk_count_for(size, chunk_size_for(size))) or chunk_size == 4 * MIB


@pytest.mark.parametrize("size", [4096 * MIB + 1, 8192 * MIB, 16384 * MIB, 65536 * MIB])
def test_above_4_gib_the_general_chunk_size(size: int) -> None:
    assert sync_chunk_size(size) == chunk_size_for(size) <= MAX_CHUNK_SIZE
