"""This node's side of a synced folder (``peer/sync/local.py``): scans in steps that take up the listing already made."""

from __future__ import annotations

import os
import pathlib
from typing import Any, cast

import attrs

from common.sync_rules import STATE_FOLDER
from peer.node import Peer
from peer.storage.library import Library
from peer.storage.manifest_cache import ManifestCache
from peer.sync.fsops import stat_of
from peer.sync.index import Index
from peer.sync.local import LocalSide

ME = b"m" * 8


@attrs.define
class OfflinePeer:
    """What a scan uses of a :class:`Peer` when no tracker is connected: the library its files are served from."""

    library: Library = attrs.field(factory=Library)
    connected: bool = False
    name: str = "test"


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


async def test_a_restarted_node_serves_its_files_unchanged_since_the_last_run(tmp_path: pathlib.Path) -> None:
    contents = {f"d{i % 3}/f{i:03d}.txt": f"file {i}".encode() for i in range(300)}
    for path, data in contents.items():
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_bytes(data)
    first = local_side(tmp_path)
    await first.scan()
    first.index.save(tmp_path)
    again = local_side(tmp_path)
    again.index = Index.load(tmp_path)  # the next run: nothing changed, so nothing is hashed
    assert await again.scan() == 0
    library = again.peer.library
    assert len(library.files) == len(contents)
    for path, data in contents.items():
        held = library.get(again.index.entries[path].file_id)
        assert held is not None and held.path == tmp_path / path
        assert os.pread(held.fd, len(data) + 1, 0) == data  # served from a descriptor on that file
