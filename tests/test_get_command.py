"""``chunkswarm get`` as a user meets it: real ``python -m chunkswarm get`` processes against an in-process swarm.

Two gets of one file into one folder, a file nobody holds, several names and
patterns, ``-o FILE``, and Ctrl-C.
"""

from __future__ import annotations

import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from chunkswarm.get_command import output_target
from common.manifest import build_manifest
from tests.procs import Child, part_state, spawn, wait_until
from tests.test_peer_swarm import CHUNK, Swarm, offer, source, swarm, tracker  # noqa: F401  (fixtures)


def get_args(swarm: Swarm, state: pathlib.Path, *args: str) -> list[str]:
    return ["-m", "chunkswarm", "get", *args, "--tracker", f"{swarm.tracker[0]}:{swarm.tracker[1]}", "--state-dir", str(state)]


async def run_get(swarm: Swarm, state: pathlib.Path, *args: str) -> tuple[int, str]:
    """A whole ``get``: (exit status, its stderr with runs of whitespace as one space)."""
    result = await trio.run_process([sys.executable, *get_args(swarm, state, *args)], capture_stdout=True, capture_stderr=True,
                                    check=False, env={**os.environ, "COLUMNS": "250"})  # fmt: skip
    return result.returncode, " ".join(result.stderr.decode(errors="replace").split())


async def half_downloaded(child: Child, state_file: pathlib.Path, half: int) -> None:
    """Wait until the ``get`` in ``child`` has the half a partial holder offers (it then waits for the rest)."""
    with trio.move_on_after(30):
        await wait_until(lambda: part_state(state_file) == [[0, half]] or child.process.poll() is not None)
    assert child.process.poll() is None and part_state(state_file) == [[0, half]], (part_state(state_file), child.text)


@asynccontextmanager
async def half_held(swarm: Swarm, source: pathlib.Path) -> AsyncIterator[int]:
    """A peer that holds the first half of ``source``'s chunks (a get then waits for the rest); yields that half."""
    manifest = build_manifest(source, CHUNK)
    half = manifest.chunk_count // 2
    async with swarm.peer() as partial:
        await offer(partial, source, manifest, range(half))
        yield half


async def test_a_second_get_of_the_same_file_into_the_same_folder_stops_at_once(
    swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path, nursery: trio.Nursery
) -> None:
    out = tmp_path / "out"
    part, state_file, lock = out / "data.bin.part", out / "data.bin.part.state", out / "data.bin.part.lock"
    with trio.fail_after(60):
        async with half_held(swarm, source) as half:
            # The first get takes the half it can find, then waits for the rest (holding the lock).
            async with spawn(nursery, *get_args(swarm, tmp_path / "g1", "data.bin", "-o", f"{out}/", "--stall-timeout", "60")) as first:
                await half_downloaded(first, state_file, half)
                assert lock.exists()
                before = (part.stat().st_mtime_ns, state_file.read_bytes())
                status, text = await run_get(swarm, tmp_path / "g2", "data.bin", "-o", f"{out}/")
                assert status == 1, text
                assert f"another get is already downloading data.bin into {out}" in text and str(lock) in text, text
                assert (part.stat().st_mtime_ns, state_file.read_bytes()) == before  # nothing touched
                assert sorted(p.name for p in out.iterdir()) == ["data.bin.part", "data.bin.part.lock", "data.bin.part.state"]
                # A lock whose holder is dead blocks nobody: flock went with the process.
                first.kill()
                assert await first.process.wait() == -signal.SIGKILL
            assert lock.exists()
            async with swarm.peer() as full:
                await full.publish([source])
                status, text = await run_get(swarm, tmp_path / "g3", "data.bin", "-o", str(out))  # an existing directory
    assert status == 0, text
    assert (out / "data.bin").read_bytes() == source.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["data.bin"]  # the lock went with the download that finished


async def test_a_file_nobody_holds_fails_at_once_and_leaves_nothing(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    async with swarm.peer() as gone:
        await gone.publish([source])
    # Its only holder left: the tracker still lists the file, with 0 holders.
    out = tmp_path / "new" / "folder"
    with trio.fail_after(10):  # far less than the 15 s stall timeout
        status, text = await run_get(swarm, tmp_path / "g", "data.bin", "-o", str(out) + "/")
    assert status == 1
    assert "no peer holds data.bin now (0 holders on the tracker); nothing was downloaded" in text, text
    assert not (tmp_path / "new").exists()


async def test_several_names_and_patterns_one_after_the_other(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    extra = source.parent / "small.txt"
    extra.write_bytes(b"hello " * 100)
    (source.parent / "other.iso").write_bytes(b"iso" * 1000)
    out = tmp_path / "out"
    with trio.fail_after(60):
        async with swarm.peer() as seeder:
            await seeder.publish([source.parent])
            status, text = await run_get(swarm, tmp_path / "g", "*.bin", "small.txt", "-o", str(out))
            assert status == 0, text
            assert (out / "data.bin").read_bytes() == source.read_bytes() and (out / "small.txt").read_bytes() == extra.read_bytes()
            assert not (out / "other.iso").exists()
            assert f"data.bin -> {out / 'data.bin'} (" in text and f"small.txt -> {out / 'small.txt'} (" in text
            assert "1 chunk from peer-1: 1)" in text  # small.txt: one chunk, said so
            # Any failure: exit 1 and a summary naming each, after the others were downloaded.
            status, text = await run_get(swarm, tmp_path / "g", "nope.bin", "*.iso", "*.zip", "-o", str(tmp_path / "more"))
            assert status == 1
            assert (tmp_path / "more" / "other.iso").read_bytes() == (source.parent / "other.iso").read_bytes()
            assert "Error: 2 of 3 files failed (nope.bin: no file named 'nope.bin'" in text and "*.zip: no file on the tracker matches '*.zip')" in text
            # Again: already complete, and said so.
            status, text = await run_get(swarm, tmp_path / "g", "small.txt", "-o", str(out))  # an existing directory
            assert status == 0 and f"small.txt: already complete at {out / 'small.txt'}, nothing downloaded" in text, text


async def test_dash_o_names_the_output_file_of_one_name(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(60):
        async with swarm.peer() as seeder:
            await seeder.publish([source])
            status, text = await run_get(swarm, tmp_path / "g", "data.bin", "-o", str(tmp_path / "copies" / "renamed.bin"))
    assert status == 0, text
    assert (tmp_path / "copies" / "renamed.bin").read_bytes() == source.read_bytes()
    assert os.listdir(tmp_path / "copies") == ["renamed.bin"]


def test_dash_o_is_a_directory_unless_it_names_one_file(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    assert output_target(None, ("a",)) == (pathlib.Path("."), "")
    assert output_target(str(tmp_path / "x.bin"), ("a",)) == (tmp_path, "x.bin")
    assert output_target(str(folder), ("a",)) == (folder, "")  # an existing directory
    assert output_target(str(tmp_path / "new") + "/", ("a",)) == (tmp_path / "new", "")  # a trailing slash
    assert output_target(str(tmp_path / "x"), ("a", "b")) == (tmp_path / "x", "")  # several files
    assert output_target(str(tmp_path / "x"), ("*.iso",)) == (tmp_path / "x", "")  # a pattern asks for files


async def test_ctrl_c_says_what_was_kept_and_how_to_resume(
    swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path, nursery: trio.Nursery
) -> None:
    out = tmp_path / "out"
    with trio.fail_after(60):
        async with half_held(swarm, source) as half:
            args = get_args(swarm, tmp_path / "g", "data.bin", "-o", f"{out}/")
            async with spawn(nursery, *args) as get:
                await half_downloaded(get, out / "data.bin.part.state", half)
                get.signal(signal.SIGINT)
                assert await get.wait_exit() == 130
    kept = half * CHUNK / 2**20
    assert f"interrupted: kept {kept:.1f} MiB of 4.0 MiB (50%) of data.bin in {out / 'data.bin.part'}; " in get.text, get.text
    assert f"resume with the same command: python -m chunkswarm {' '.join(args[2:])}" in get.text
    assert (out / "data.bin.part").exists() and not (out / "data.bin.part.lock").exists()
