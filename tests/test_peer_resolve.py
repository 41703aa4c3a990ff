"""Finding a file by name when several files share it (``Peer.resolve``): the one peers hold is meant.

The choice itself (``_live_one``) over made-up listings, then a name published
twice over an in-process tracker, one copy without a holder (the fixtures of
tests/test_peer_swarm.py).
"""

from __future__ import annotations

import pathlib

import pytest
import trio

from common.errors import AmbiguousFile
from common.manifest import build_manifest
from common.messages import FileEntry
from common.wording import format_size, plural
from peer.catalogue import _live_one
from tests.test_peer_swarm import Swarm, source, swarm, tracker  # noqa: F401  (fixtures)


def _entry(name: str, holders: int, complete: int, tag: int) -> FileEntry:
    return FileEntry(bytes([tag]) * 32, name, 1000 + tag, 1024, 1, holders, complete)


@pytest.mark.parametrize(
    ("entries", "picked"),
    [
        ([(0, 0), (1, 1)], 1),  # the live one, newest or not
        ([(1, 1), (0, 0), (0, 0)], 0),
        ([(2, 0), (1, 1)], 1),  # complete copies first
        ([(0, 0), (3, 0)], 1),  # else holders
        ([(0, 0), (0, 0)], 0),  # none: the newest (its download waits for holders)
        ([(2, 1), (1, 1)], None),  # two with complete copies: ambiguous
        ([(0, 0), (2, 0), (1, 0)], None),  # two with holders only: ambiguous
    ],
)
def test_a_name_of_several_files_means_the_one_peers_hold(entries: list[tuple[int, int]], picked: int | None) -> None:
    files = [_entry("same.bin", holders, complete, tag) for tag, (holders, complete) in enumerate(entries)]
    if picked is not None:
        assert _live_one("same.bin", files) is files[picked]
        return
    with pytest.raises(AmbiguousFile) as info:
        _live_one("same.bin", files)
    live = [e for e in files if e.holders]
    assert set(info.value.candidates) == set(live)
    for entry in live:  # each candidate with its id, holders and size
        copies = plural(entry.complete_copies, "complete copy", "complete copies")
        assert f"id {entry.file_id.hex()[:16]}, {plural(entry.holders, 'holder')}, {copies}, {format_size(entry.size)})" in str(info.value)


async def test_a_name_published_twice_resolves_to_the_copy_peers_hold(
    swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    with trio.fail_after(20):
        async with swarm.peer() as getter:
            # data.bin once published with 64 KiB chunks by a peer that has left (no holder) ...
            async with swarm.peer(chunk_size=64 * 1024) as early:
                (old,) = await early.publish([source])
            # ... and again with the default chunk size by a peer that serves it.
            async with swarm.peer(chunk_size=None) as seeder:
                (new,) = await seeder.publish([source])
                assert old.file_id != new.file_id and new.chunk_size == build_manifest(source).chunk_size
                listing = {e.file_id: (e.holders, e.chunk_size) for e in await getter.list_files("data.bin")}
                assert listing == {old.file_id: (0, 64 * 1024), new.file_id: (1, new.chunk_size)}
                assert (await getter.resolve("data.bin")).file_id == new.file_id
                result = await getter.download("data.bin", tmp_path / "out")
                assert result.manifest == new and result.path.read_bytes() == source.read_bytes()
                # Both served: the name is ambiguous, and the error says which is which.
                async with swarm.peer(chunk_size=64 * 1024) as again:
                    await again.publish([source])
                    with pytest.raises(AmbiguousFile, match=rf"'data.bin' names 2 files that peers hold: .*id {old.hex_id[:16]}, 1 holder,"):
                        await getter.resolve("data.bin")
                    assert (await getter.resolve(old.hex_id[:12])).file_id == old.file_id  # an id prefix still chooses
