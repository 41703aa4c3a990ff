"""This node's side of a synced folder (``peer/sync/local.py``): scans in steps that take up the listing already made."""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import Any, cast

import attrs
import pytest

from common.errors import ConnectionClosed, StorageError
from common.manifest import sha256
from common.sync_rules import STATE_FOLDER
from peer.node import Peer
from peer.storage.library import Library
from peer.storage.manifest_cache import ManifestCache
from peer.sync import local as local_module
from peer.sync.fsops import stat_of
from peer.sync.index import Index, index_path
from peer.sync.local import LocalSide, single_chunk_manifest
from peer.sync.scan import Scan, scan_folder

ME = b"m" * 8


@attrs.define
class OfflinePeer:
    """What a scan uses of a :class:`Peer` when no tracker is connected: the library its files are served from."""

    library: Library = attrs.field(factory=Library)
    connected: bool = False
    name: str = "test"
    tracker: object = None


def local_side(root: pathlib.Path) -> LocalSide:
    (root / STATE_FOLDER).mkdir(parents=True, exist_ok=True)
    peer = cast(Peer, cast(Any, OfflinePeer()))
    return LocalSide(peer, root, Index(), ME, ManifestCache(root / STATE_FOLDER / "manifests"))


async def test_a_scan_in_steps_lists_the_folder_once_until_it_changes(tmp_path: pathlib.Path) -> None:
    for i in range(600):
        (tmp_path / f"f{i:03d}.txt").write_text(f"file {i}")
    local = local_side(tmp_path)
    assert await local.scan(limit=256) == 256 and local.more
    (tmp_path / "late.txt").write_text("made after the listing")
    assert await local.scan(limit=256) == 256 and local.more  # the same listing taken up: late.txt is not in it
    assert await local.scan(limit=256) == 88 and not local.more
    assert "late.txt" not in local.index.entries and len(local.index.entries) == 600
    await local.scan(limit=256)  # listed again: done with the last listing
    assert "late.txt" in local.index.entries
    for path in list(local.index.entries)[:300]:
        (tmp_path / path).write_text("changed")
    assert await local.scan(limit=256) == 256 and local.more
    local.stale()  # an event: the next scan lists the folder again
    (tmp_path / "later.txt").write_text("made after the listing, with an event")
    assert await local.scan(limit=256) == 45 and "later.txt" in local.index.entries


async def test_a_path_gone_from_the_listing_but_written_since_is_not_deleted(tmp_path: pathlib.Path) -> None:
    for i in range(300):
        (tmp_path / f"f{i:03d}.txt").write_text(f"file {i}")
    local = local_side(tmp_path)
    await local.scan()
    for i in range(290):
        (tmp_path / f"f{i:03d}.txt").write_text(f"changed {i}")
    (tmp_path / "f299.txt").unlink()
    await local.scan(limit=256)
    assert local.more
    # Meanwhile another node's f299.txt is taken here (as the applier records it).
    (tmp_path / "f299.txt").write_text("another node's")
    entry = local.index.entries["f299.txt"]
    stat = stat_of(tmp_path / "f299.txt")
    local.index.record(entry, stat, dirty=False)
    await local.scan(limit=256)
    assert not local.more and not local.index.entries["f299.txt"].deleted


def _listings(monkeypatch: pytest.MonkeyPatch) -> list[pathlib.Path]:
    """Each listing of a whole folder a scan makes, from now on."""
    made: list[pathlib.Path] = []

    def counted(root: pathlib.Path) -> Scan:
        made.append(root)
        return scan_folder(root)

    monkeypatch.setattr(local_module, "scan_folder", counted)
    return made


def _live(local: LocalSide) -> set[str]:
    return {path for path, entry in local.index.entries.items() if not entry.deleted}


async def test_a_scan_after_events_looks_at_their_paths_alone(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An edit in a folder of many files cost a listing of all of them (0.16 CPU-s for 9,000); the
    # watcher's paths are enough, as Syncthing scans only the folders that changed.
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i in range(20):
            (tmp_path / folder / f"{i}.txt").write_text(f"{folder} {i}")
    (tmp_path / ".chunkswarmignore").write_text("*.tmp\n")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "x.txt").write_text("not in the folder")
    local = local_side(tmp_path)
    await local.scan()
    listings = _listings(monkeypatch)
    (tmp_path / "a" / "0.txt").write_text("edited")
    (tmp_path / "a" / "1.txt").unlink()
    (tmp_path / "b" / "new.txt").write_text("new")
    (tmp_path / "b" / "skip.tmp").write_text("ignored")
    (tmp_path / "b" / "2.txt").unlink()
    (tmp_path / "b" / "2.txt").symlink_to(outside / "x.txt")  # a file replaced by a link: gone, never followed
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    local.stale({"a/0.txt", "a/1.txt", "b/new.txt", "b/skip.tmp", "b/2.txt", "link/x.txt", "a/never-made.txt"})
    assert await local.scan() == 4
    assert listings == []
    assert _live(local) == {f"{f}/{i}.txt" for f in "ab" for i in range(20)} - {"a/1.txt", "b/2.txt"} | {"b/new.txt", ".chunkswarmignore"}
    assert local.index.entries["a/0.txt"].file_id != local.index.entries["a/3.txt"].file_id and local.index.entries["a/1.txt"].deleted
    assert any("b/2.txt: a symbolic link" in problem for problem in local.told)


async def test_a_folder_among_the_events_lists_the_whole_folder(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    (tmp_path / "keep.txt").write_text("keep")
    local = local_side(tmp_path)
    await local.scan()
    listings = _listings(monkeypatch)
    shutil.rmtree(tmp_path / "a")  # one event, for the folder: the files below it are gone too
    local.stale({"a"})
    assert await local.scan() == 1 and _live(local) == {"keep.txt"} and len(listings) == 1
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "in.txt").write_text("moved in")  # a folder moved in: its own event alone
    local.stale({"moved"})
    assert await local.scan() == 1 and _live(local) == {"keep.txt", "moved/in.txt"} and len(listings) == 2
    (tmp_path / ".chunkswarmignore").write_text("keep.txt\n")  # other rules: every path may be in or out now
    local.stale({".chunkswarmignore"})
    await local.scan()
    assert _live(local) == {"moved/in.txt", ".chunkswarmignore"} and len(listings) == 3
    local.stale({"moved/in.txt"})
    local.stale()  # a rescan meanwhile: the whole folder
    await local.scan()
    assert len(listings) == 4


async def test_a_restarted_node_serves_its_files_unchanged_since_the_last_run(tmp_path: pathlib.Path) -> None:
    contents = {f"d{i % 3}/f{i:03d}.txt": f"file {i}".encode() for i in range(300)}
    for path, data in contents.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_bytes(data)
    first = local_side(tmp_path)
    await first.scan()
    index_path(tmp_path).write_bytes(first.index.encoder()())  # as a stopping node saves it
    again = local_side(tmp_path)
    again.index = Index.load(tmp_path)  # the next run: nothing changed, so nothing is hashed
    assert await again.scan() == 0
    library = again.peer.library
    assert len(library.files) == len(contents)
    for path, data in contents.items():
        held = library.get(again.index.entries[path].file_id)
        assert held is not None and held.path == tmp_path / path
        assert os.pread(held.fd, len(data) + 1, 0) == data  # served from a descriptor on that file


@attrs.define
class LostTracker:
    """A tracker link that fails every request, as one lost mid-request does."""

    async def request_many(self, messages: list[object]) -> list[object]:
        raise ConnectionClosed("tracker connection closed")


async def test_announcing_files_taken_survives_a_tracker_lost_meanwhile(tmp_path: pathlib.Path) -> None:
    # It runs in the engine's nursery: the ConnectionClosed it let through ended the whole sync.
    local = local_side(tmp_path)
    peer = cast(OfflinePeer, local.peer)
    peer.connected, peer.tracker = True, LostTracker()
    manifest = single_chunk_manifest("a.txt", 5, sha256(b"hello"))
    await local.announce_held([manifest])
    assert manifest.file_id not in local.published  # announced by the reconnection instead


async def test_a_folder_replaced_by_a_file_of_its_name_takes_its_files_away(tmp_path: pathlib.Path) -> None:
    # A folder moved out of the synced folder is one event, for its name; a file made there is a second event for
    # the same name. The files the folder held are gone (else they stay in the index until the periodic rescan).
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    (tmp_path / "keep.txt").write_text("keep")
    local = local_side(tmp_path)
    await local.scan()
    away = tmp_path.parent / f"{tmp_path.name}-away"
    (tmp_path / "d").rename(away)
    (tmp_path / "d").write_text("a file now")
    local.stale({"d"})
    await local.scan()
    assert _live(local) == {"keep.txt", "d"}
    # The same with a tombstone at the folder's name (a file d once, deleted): the folder's files go too.
    (tmp_path / "d").unlink()
    local.stale({"d"})
    await local.scan()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "y.txt").write_text("y")
    local.stale({"d"})
    await local.scan()
    assert _live(local) == {"keep.txt", "d/y.txt"} and local.index.entries["d"].deleted
    (tmp_path / "d").rename(tmp_path.parent / f"{tmp_path.name}-away2")
    local.stale({"d"})
    await local.scan()
    assert _live(local) == {"keep.txt"}


async def test_an_event_while_a_scan_in_steps_runs_is_not_lost(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(600):
        (tmp_path / f"f{i:03d}.txt").write_text(f"file {i}")
    local = local_side(tmp_path)
    listed = LocalSide._list
    calls = []

    async def list_then_event(self: LocalSide) -> Any:
        result = await listed(self)
        if not calls:  # a file made while the scan hashes: its event reaches the engine (stale) during the scan
            (tmp_path / "late.txt").write_text("made while the first step hashes")
            self.stale({"late.txt"})
        calls.append(1)
        return result

    monkeypatch.setattr(LocalSide, "_list", list_then_event)
    while True:  # as the engine scans: again while there is more
        await local.scan(limit=256)
        if not local.more:
            break
    assert "late.txt" in local.index.entries and len(_live(local)) == 601


async def test_a_file_not_hashed_for_an_error_is_tried_again_by_a_scan_of_events(tmp_path: pathlib.Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (tmp_path / "keep.txt").write_text("keep")
    local = local_side(tmp_path)
    await local.scan()
    (tmp_path / "a.txt").write_text("a")
    failed = []
    opened = local_module.open_file

    def failing_once(folders: Any, relative: str) -> int:
        if relative == "a.txt" and not failed:
            failed.append(relative)
            raise OSError(24, "Too many open files")  # transient: no event follows when it passes
        return opened(folders, relative)

    monkeypatch.setattr(local_module, "open_file", failing_once)
    local.stale({"a.txt"})
    await local.scan()
    assert failed and "a.txt" not in local.index.entries
    (tmp_path / "b.txt").write_text("b")
    local.stale({"b.txt"})  # the next event, for another path: the next scan tries a.txt again, as its log line says
    await local.scan()
    assert _live(local) == {"keep.txt", "a.txt", "b.txt"}


async def test_a_folder_that_cannot_be_read_deletes_nothing(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder the scan could not read (a chmod 000, a failing disk) listed no file, so the index's files there were
    # deleted here, and the deletions went to every other node. (Root reads any folder: the refusal is simulated.)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("x")
    (tmp_path / "keep.txt").write_text("keep")
    local = local_side(tmp_path)
    await local.scan()
    unreadable: set[pathlib.Path] = set()
    scandir, lstat = os.scandir, os.lstat

    def refused(path: Any) -> None:
        if pathlib.Path(path) in unreadable or pathlib.Path(path).parent in unreadable:
            raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", lambda path: refused(path) or scandir(path))
    monkeypatch.setattr(os, "lstat", lambda path, **kw: refused(path) or lstat(path, **kw))
    unreadable.add(tmp_path / "d")
    local.stale()
    await local.scan()
    local.stale({"d/x.txt"})  # an event there too: its path cannot be looked at either
    await local.scan()
    assert _live(local) == {"d/x.txt", "keep.txt"}
    assert any("d: cannot read the folder (Permission denied)" in problem for problem in local.told)
    unreadable.add(tmp_path)  # the whole folder (a drive gone bad under it)
    local.stale()
    await local.scan()
    assert _live(local) == {"d/x.txt", "keep.txt"}
    unreadable.clear()
    (tmp_path / "d" / "x.txt").unlink()  # readable again: a file really gone is gone
    local.stale()
    await local.scan()
    assert _live(local) == {"keep.txt"}


async def test_a_synced_folder_replaced_while_syncing_deletes_nothing(tmp_path: pathlib.Path) -> None:
    # Removed and made again (or a drive unmounted under it), the path lists as an empty folder: every file
    # counted as deleted, and the deletions went to every other node.
    root = tmp_path / "synced"
    root.mkdir()
    (root / "a.txt").write_text("a")
    local = local_side(root)
    await local.scan()
    root.rename(tmp_path / "moved-away")
    local.stale()
    with pytest.raises(StorageError, match=r"removed or replaced.*path is gone"):
        await local.scan()
    root.mkdir()  # an empty folder at its path
    for paths in (None, {"a.txt"}):
        local.stale(paths)
        with pytest.raises(StorageError, match=r"removed or replaced.*another folder now"):
            await local.scan()
    assert _live(local) == {"a.txt"}


async def test_an_unchanged_file_not_opened_after_a_restart_is_served_by_the_next_scan(tmp_path: pathlib.Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    # Its stat is the index's, so no scan hashed it again: a transient error opening it (EMFILE) left it
    # unserved and unpublished for the whole run.
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
    first = local_side(tmp_path)
    await first.scan()
    index_path(tmp_path).write_bytes(first.index.encoder()())
    again = local_side(tmp_path)
    again.index = Index.load(tmp_path)
    opened = local_module._open_batch
    monkeypatch.setattr(local_module, "_open_batch", lambda root, batch: [None if path == "a.txt" else fd for (path, _), fd
                                                                          in zip(batch, opened(root, batch), strict=True)])  # fmt: skip
    await again.scan()
    served = lambda: {held.path.name for held in again.peer.library.files.values()}  # noqa: E731
    assert served() == {"b.txt"}
    monkeypatch.undo()
    again.stale({"b.txt"})  # any event
    assert await again.scan() == 0 and served() == {"a.txt", "b.txt"}
