"""``chunkswarm seed`` as a service, as real processes: it outlives a missing tracker and follows its folder."""

from __future__ import annotations

import os
import pathlib
import socket
import sys

import pytest
import trio

from common.errors import TrackerUnavailable
from common.messages import FileEntry
from peer.catalogue import open_catalogue
from peer.config import PeerConfig
from tests.procs import ROOT, spawn, start_tracker

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _entries(port: int, tmp_path: pathlib.Path) -> list[FileEntry]:
    """What the tracker lists now, newest first, or [] while it does not answer."""
    config = PeerConfig(tracker=("127.0.0.1", port), state_dir=tmp_path / "query", tracker_timeout=2)
    try:
        async with open_catalogue(config) as catalogue:
            return await catalogue.list_files()
    except TrackerUnavailable:  # not up yet
        return []


async def _listing(port: int, tmp_path: pathlib.Path) -> dict[str, FileEntry]:
    """What the tracker lists now, by name (the newest entry of a name wins)."""
    return {entry.name: entry for entry in reversed(await _entries(port, tmp_path))}


async def _until_unheld(port: int, tmp_path: pathlib.Path, file_id: bytes) -> None:
    """Poll the tracker until no live peer holds ``file_id``."""
    while any(entry.file_id == file_id and entry.holders for entry in await _entries(port, tmp_path)):
        await trio.sleep(0.1)


async def _until_listed(port: int, tmp_path: pathlib.Path, name: str, *, holders: int = 1, not_id: bytes | None = None) -> FileEntry:
    """Poll the tracker until ``name`` is listed with ``holders`` live holders (and another id than ``not_id``)."""
    while True:
        entry = (await _listing(port, tmp_path)).get(name)
        if entry is not None and entry.holders == holders and entry.file_id != not_id:
            return entry
        await trio.sleep(0.1)


def _seed_args(port: int, folder: pathlib.Path, state: pathlib.Path) -> list[str]:
    return ["-m", "chunkswarm", "seed", str(folder), "--tracker", f"127.0.0.1:{port}", "--state-dir", str(state), "--label", "svc",
            "--chunk-size", "1024"]  # fmt: skip


async def test_a_seeder_started_before_its_tracker_publishes_once_it_is_up(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "early.bin").write_bytes(os.urandom(5000))
    port = _free_port()
    async with trio.open_nursery() as nursery:
        async with spawn(nursery, *_seed_args(port, folder, tmp_path / "s"), name="seeder") as seeder:
            with trio.fail_after(20):
                await seeder.wait_for("seeding early.bin")  # published into its library, the tracker still down
                await seeder.wait_for("unreachable")
            assert seeder.process.poll() is None, seeder.text  # c24b91b exited here: "tracker ... unreachable"
            async with start_tracker(nursery, tmp_path / "t.db", "--heartbeat-interval", "1", port=port):
                with trio.fail_after(20):
                    await _until_listed(port, tmp_path, "early.bin")
        nursery.cancel_scope.cancel()


async def test_a_seeded_folder_is_followed(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "share"
    (folder / "sub").mkdir(parents=True)
    (folder / "kept.bin").write_bytes(os.urandom(3000))
    (folder / "edited.bin").write_bytes(b"first version " * 300)
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db", "--heartbeat-interval", "1") as (_, port), \
                   spawn(nursery, *_seed_args(port, folder, tmp_path / "s"), name="seeder") as seeder:  # fmt: skip
            with trio.fail_after(20):
                await seeder.wait_for("watching")
                first = await _until_listed(port, tmp_path, "edited.bin")
            # A new file, in a new subfolder too: published without a restart.
            (folder / "new.bin").write_bytes(os.urandom(7000))
            (folder / "sub" / "deep.bin").write_bytes(os.urandom(2000))
            # A part file of a download into the folder is not chunkswarm's to publish.
            (folder / "half.bin.part").write_bytes(b"x" * 100)
            with trio.fail_after(20):
                await _until_listed(port, tmp_path, "new.bin")
                await _until_listed(port, tmp_path, "deep.bin")
            # An edited file is published again under its new id, and its old version is not served.
            (folder / "edited.bin").write_bytes(b"second version " * 300)
            with trio.fail_after(20):
                again = await _until_listed(port, tmp_path, "edited.bin", not_id=first.file_id)
                await seeder.wait_for("edited.bin changed: published again")
            with trio.fail_after(3):  # the old version withdrawn from the tracker, not just unserved
                await _until_unheld(port, tmp_path, first.file_id)
            assert again.size == len(b"second version " * 300)
            # A removed file is no longer served, nor listed as held.
            kept = (await _listing(port, tmp_path))["kept.bin"]
            (folder / "kept.bin").unlink()
            with trio.fail_after(20):
                await seeder.wait_for("kept.bin is gone: no longer serving it")
            with trio.fail_after(3):
                await _until_unheld(port, tmp_path, kept.file_id)
            assert "half.bin.part" not in await _listing(port, tmp_path)
            # The new version downloads, byte for byte.
            out = tmp_path / "out"
            got = await trio.run_process(
                [sys.executable, "-m", "chunkswarm", "get", again.file_id.hex()[:16], "-o", f"{out}/", "--tracker", f"127.0.0.1:{port}",
                 "--state-dir", str(tmp_path / "g")], cwd=ROOT, capture_stderr=True, check=False)  # fmt: skip
            assert got.returncode == 0, got.stderr
            assert (out / "edited.bin").read_bytes() == b"second version " * 300
        nursery.cancel_scope.cancel()


async def test_a_file_whose_name_is_refused_is_skipped_and_the_rest_seeded(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "ok.bin").write_bytes(os.urandom(2000))
    (folder / "victim\u200b.bin").write_bytes(os.urandom(2000))  # a zero-width look-alike (issue 12, finding 9)
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db", "--heartbeat-interval", "1") as (_, port), \
                   spawn(nursery, *_seed_args(port, folder, tmp_path / "s"), name="seeder") as seeder:  # fmt: skip
            with trio.fail_after(20):
                await seeder.wait_for("watching")
                await _until_listed(port, tmp_path, "ok.bin")
            assert seeder.output.count(b"skipping") == 1 and b"U+200B" in seeder.output
            assert seeder.process.returncode is None  # still seeding
            assert list(await _listing(port, tmp_path)) == ["ok.bin"]
        nursery.cancel_scope.cancel()
