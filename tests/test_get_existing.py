"""``get X`` never removes or truncates a file it did not make: ``X``, ``X.part`` and its state stay as they were without --force."""

from __future__ import annotations

import os
import pathlib

import pytest
import trio

from common.errors import StorageError
from tests.test_peer_swarm import Swarm, source, tracker

__all__ = ["source", "tracker"]  # the fixtures, used by name


@pytest.fixture
def swarm(tracker: tuple[str, int], tmp_path: pathlib.Path) -> Swarm:
    return Swarm(tracker, tmp_path)


async def test_get_refuses_a_part_file_it_did_not_make(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    part = out / "data.bin.part"
    notes = os.urandom(1000)
    part.write_bytes(notes)
    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer() as getter:
            (manifest,) = await seeder.publish([source.parent])
            with pytest.raises(StorageError, match=f"{part} is in the way: it is not a download of data.bin in progress.*--force"):
                await getter.download(manifest.hex_id, out)
            assert sorted(p.name for p in out.iterdir()) == ["data.bin.part"] and part.read_bytes() == notes
            # With --force it is replaced, and the download completes.
            result = await getter.download(manifest.hex_id, out, force=True)
            assert result.path.read_bytes() == source.read_bytes() and sorted(p.name for p in out.iterdir()) == ["data.bin"]
