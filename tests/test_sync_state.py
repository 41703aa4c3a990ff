"""A sync's state folder (``DIR/.chunkswarm``): written beneath the folder, never through a link, and from two tasks at once.

* Two writes of one file at once (the status file: the presence task's and the
  cycle's, each in a worker thread) each use a temporary of their own.
* What the event loop changes (the index, the nodes, the transfers) is copied
  on the loop, never iterated by the worker thread that writes.
* A ``.chunkswarm`` that is a symbolic link to elsewhere is refused: nothing
  is written (or read) there, whether it was a link from the start or swapped in.
"""

from __future__ import annotations

import os
import pathlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from chunkswarm.cli import cli
from common.errors import StorageError
from common.identity import NodeKey
from common.sync_rules import STATE_FOLDER
from peer.config import PeerConfig
from peer.node import Peer, open_peer
from peer.storage import fs
from peer.storage.fs import atomic_write
from peer.storage.manifest_cache import ManifestCache
from peer.sync.beneath import Root
from peer.sync.engine import SyncConfig, SyncFolder
from peer.sync.state import StateFolder
from tests.procs import wait_until
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


def test_two_atomic_writes_of_one_file_at_once(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread's write of the same file between this one's write and its rename (what the status file met)."""
    target = tmp_path / "status.json"
    real_replace = os.replace
    nested = []

    def replace(source: Any, destination: Any, **kwargs: Any) -> None:
        if not nested:
            nested.append(source)
            atomic_write(target, b"second")  # with one temporary per process: renames this write's temporary away
        real_replace(source, destination, **kwargs)

    monkeypatch.setattr(fs.os, "replace", replace)
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"  # the outer write renamed last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # no temporary left


class _LoopOnly(dict[Any, Any]):
    """A dict that records every iteration of it outside the event loop's thread."""

    def __init__(self, data: dict[Any, Any], strays: list[str]) -> None:
        super().__init__(data)
        self.strays = strays

    def _note(self, what: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.strays.append(what)

    def __iter__(self) -> Iterator[Any]:
        self._note("iter")
        return super().__iter__()

    def values(self) -> Any:
        self._note("values")
        return super().values()

    def items(self) -> Any:
        self._note("items")
        return super().items()


def _config(tmp_path: pathlib.Path, label: str, address: tuple[str, int] = ("127.0.0.1", 9)) -> PeerConfig:
    return PeerConfig(tracker=address, state_dir=tmp_path / f"state-{label}", label=label, node_key=NodeKey.generate(), connect_timeout=5.0)


async def _run_one_cycle(peer: Peer, folder: SyncFolder, done: Callable[[], bool]) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(folder.run)
        with trio.fail_after(60):
            await wait_until(done, poll=0.02)
        nursery.cancel_scope.cancel()


async def test_the_status_and_index_are_copied_on_the_event_loop(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    root = tmp_path / "a"
    root.mkdir()
    for n in range(50):
        (root / f"f{n}.txt").write_text(f"file {n}")
    strays: list[str] = []
    async with open_peer(_config(tmp_path, "a", (running.host, running.port))) as peer:
        await peer.connect()
        folder = SyncFolder(peer, SyncConfig(root, "shared", fsync=False, presence_interval=0.01))
        folder.index.entries = _LoopOnly(folder.index.entries, strays)
        folder.nodes = _LoopOnly(folder.nodes, strays)
        folder.applier.transfers = _LoopOnly(folder.applier.transfers, strays)
        status = root / STATE_FOLDER / "status.json"
        await _run_one_cycle(peer, folder, lambda: folder.cycles >= 2 and status.exists() and b'"f49.txt"' in status.read_bytes())
    assert strays == []  # the old code: the worker thread iterated the index's entries, the nodes and the transfers
    assert sorted(p.name for p in (root / STATE_FOLDER).iterdir() if p.name.endswith(".tmp")) == []


async def test_a_state_folder_that_is_a_link_is_refused(tmp_path: pathlib.Path) -> None:
    root, outside = tmp_path / "a", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "x.txt").write_text("x")
    (root / STATE_FOLDER).symlink_to(outside)
    async with open_peer(_config(tmp_path, "a")) as peer:
        with pytest.raises(StorageError, match="is a symbolic link: nothing is written or read through it"):
            SyncFolder(peer, SyncConfig(root, "shared", fsync=False))
    assert list(outside.iterdir()) == []
    (root / STATE_FOLDER).unlink()
    (root / STATE_FOLDER).write_text("a file")
    async with open_peer(_config(tmp_path, "b")) as peer:
        with pytest.raises(StorageError, match="is not a folder"):
            SyncFolder(peer, SyncConfig(root, "shared", fsync=False))


async def test_a_state_folder_swapped_for_a_link_is_not_written_through(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    root, outside = tmp_path / "a", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "x.txt").write_text("x")
    async with open_peer(_config(tmp_path, "a", (running.host, running.port))) as peer:
        await peer.connect()
        folder = SyncFolder(peer, SyncConfig(root, "shared", fsync=False))
        await _run_one_cycle(peer, folder, lambda: folder.cycles >= 1)
        assert (root / STATE_FOLDER / "index").exists()
        os.rename(root / STATE_FOLDER, tmp_path / "moved-away")
        (root / STATE_FOLDER).symlink_to(outside)
        folder.wake(scan=True)
        with pytest.raises(StorageError, match="is a symbolic link"):
            await folder.cycle()  # (before anything is scanned, fetched or staged)
        with pytest.raises(StorageError, match="is a symbolic link"):
            await folder._save()
        await folder._save_status()  # (logged)
        with pytest.raises(StorageError, match="is a symbolic link"):
            folder.state.read("index")
        folder.state.close(root=True)
        folder.local.folder.close()
    assert list(outside.iterdir()) == []  # the old code wrote index, version and status.json there


def test_a_state_folder_made_again_is_used(tmp_path: pathlib.Path) -> None:
    """Removed and made again (by hand), the state folder is opened anew, not written through the old descriptor."""
    state = StateFolder(Root(tmp_path))
    state.write("index", b"one")
    assert (tmp_path / STATE_FOLDER / "index").read_bytes() == b"one"
    os.rename(tmp_path / STATE_FOLDER, tmp_path / "old")
    assert state.read("index") is None  # (made again, empty)
    state.write("index", b"two")
    assert (tmp_path / STATE_FOLDER / "index").read_bytes() == b"two" and (tmp_path / "old" / "index").read_bytes() == b"one"
    threads = [threading.Thread(target=lambda n=n: [state.write("status.json", b"%d" % n) for _ in range(100)]) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in (tmp_path / STATE_FOLDER).iterdir()) == ["index", "status.json"]
    state.close(root=True)


async def test_an_index_that_is_a_link_is_not_followed(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    root, outside = tmp_path / "a", tmp_path / "outside"
    (root / STATE_FOLDER).mkdir(parents=True)
    outside.mkdir()
    (outside / "index").write_bytes(b"not ours")
    (root / STATE_FOLDER / "index").symlink_to(outside / "index")
    async with open_peer(_config(tmp_path, "a")) as peer:
        folder = SyncFolder(peer, SyncConfig(root, "shared", fsync=False))
        assert folder.index.entries == {} and "cannot read the sync index" in caplog.text
        await folder._save()  # the link replaced, its target untouched
        folder.state.close(root=True)
    assert (outside / "index").read_bytes() == b"not ours" and not (root / STATE_FOLDER / "index").is_symlink()


def test_sync_status_does_not_read_through_a_link(tmp_path: pathlib.Path) -> None:
    root, outside = tmp_path / "a", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "status.json").write_text('{"collection": "elsewhere"}')
    (root / STATE_FOLDER).symlink_to(outside)
    result = CliRunner().invoke(cli, ["sync", "status", str(root), "--once"])
    assert result.exit_code != 0 and "is a symbolic link" in result.output and "elsewhere" not in result.output


async def test_the_manifest_cache_is_written_beneath_the_folder_too(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    root, outside = tmp_path / "a", tmp_path / "outside"
    (root / STATE_FOLDER).mkdir(parents=True)
    outside.mkdir()
    (root / "big.bin").write_bytes(os.urandom(1_200_000))  # (files up to 1 MiB are not cached: hashed at once)
    (root / STATE_FOLDER / "manifests").symlink_to(outside)
    async with open_peer(_config(tmp_path, "a")) as peer:
        folder = SyncFolder(peer, SyncConfig(root, "shared", fsync=False))
        with pytest.raises(StorageError, match="manifests is a symbolic link"):
            await folder.cycle()  # (on 1cde9e2 the cycle cached big.bin's manifest in outside/)
        # The cache alone, asked meanwhile: not cached, never written through the link.
        manifest, signature, cached = folder.local.cache.manifest_for(root / "big.bin", 65536)
        assert not cached and "cannot cache the manifest" in caplog.text
        folder.state.close(root=True)
    assert list(outside.iterdir()) == []
    (root / STATE_FOLDER / "manifests").unlink()
    state = StateFolder(Root(root))
    cache = ManifestCache(state.path / "manifests", state.sub("manifests"))
    assert cache.manifest_for(root / "big.bin", 65536) == (manifest, signature, False)
    assert cache.get(root / "big.bin", signature, 65536) == manifest
    assert len(list((root / STATE_FOLDER / "manifests").iterdir())) == 1
    state.close(root=True)


async def test_a_staging_folder_that_is_a_link_stops_the_cycle(tmp_path: pathlib.Path) -> None:
    """Downloads are written into .chunkswarm/staging by path: the cycle refuses a link there before any download."""
    root, outside = tmp_path / "a", tmp_path / "outside"
    (root / STATE_FOLDER).mkdir(parents=True)
    outside.mkdir()
    (root / STATE_FOLDER / "staging").symlink_to(outside)
    async with open_peer(_config(tmp_path, "a")) as peer:
        folder = SyncFolder(peer, SyncConfig(root, "shared", fsync=False))
        with pytest.raises(StorageError, match="staging is a symbolic link"):
            await folder.cycle()
        folder.state.close(root=True)
    assert list(outside.iterdir()) == []
