"""Nothing outside a synced folder is written, removed or read, even when a folder is swapped for a link at the worst instant.

Each test swaps a folder of the synced folder for a symbolic link to a folder
outside it right between the node's look at the path and its use of it (the
swap is made from inside the call that comes first in that window: the scan's
listing, the temporary name's token, the unlink), which is what a local
process racing the node could do. Checking a path and then using it by name
follows the link; opening each folder from its parent's descriptor
(``peer/sync/beneath.py``) does not.
"""

from __future__ import annotations

import os
import pathlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from common.collection import Entry
from common.manifest import sha256
from common.sync_merge import Plan, local_deletion
from peer.config import PeerConfig
from peer.node import open_peer
from peer.storage.manifest_cache import ManifestCache
from peer.sync import local as local_module
from peer.sync.apply import Applier
from peer.sync.fetch import SMALL_FILE
from peer.sync.fsops import stat_of
from peer.sync.index import Index
from peer.sync.local import LocalSide

ME = b"M" * 8
THEM = b"T" * 8


@pytest.fixture
def dirs(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    return root, outside


@pytest.fixture
async def local(tmp_path: pathlib.Path, dirs: tuple[pathlib.Path, pathlib.Path]) -> AsyncIterator[LocalSide]:
    # Never connected: nothing is published, the library is what is served.
    config = PeerConfig(tracker=("127.0.0.1", 9), state_dir=tmp_path / "state", label="n")
    async with open_peer(config) as peer:
        yield LocalSide(peer, dirs[0], Index(), ME, ManifestCache(tmp_path / "manifests"))


def swapper(root: pathlib.Path, outside: pathlib.Path) -> Callable[[], None]:
    """Once: ``root/a`` moved aside (inside the folder) and a link to ``outside`` put in its place."""
    done = []

    def swap() -> None:
        if not done:
            done.append(True)
            os.rename(root / "a", root / "parked")
            os.symlink(outside, root / "a")

    return swap


def twin(inside: pathlib.Path, outside: pathlib.Path, data: bytes, secret: bytes) -> None:
    """A file inside and one outside of the same size and mtime: a stat by path cannot tell them apart."""
    inside.write_bytes(data)
    outside.write_bytes(secret)
    st = os.stat(inside)
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))


async def test_nothing_outside_is_hashed_or_served(local: LocalSide, dirs: tuple[pathlib.Path, pathlib.Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root, outside = dirs
    twin(root / "a/x", outside / "x", b"inside!", b"SECRET!")
    big, big_secret = os.urandom(SMALL_FILE + 10), os.urandom(SMALL_FILE + 10)
    twin(root / "a/big", outside / "big", big, big_secret)
    (root / "fine.txt").write_bytes(b"fine")
    real_scan, swap = local_module.scan_folder, swapper(root, outside)

    def scan_then_swap(*args: Any) -> Any:
        found = real_scan(*args)
        swap()  # listed as files of folder a; a leads outside before they are hashed
        return found

    monkeypatch.setattr(local_module, "scan_folder", scan_then_swap)
    await local.scan()
    secrets_ = {sha256(b"SECRET!")} | {m.file_id for m in [local.cache.manifest_for(outside / "big", None)[0]]}
    known = {entry.file_id for entry in local.index.entries.values()}
    assert sha256(b"fine") in known and not known & secrets_
    served = set(local.peer.library.files)
    assert sha256(b"fine") in served and not served & secrets_


async def test_nothing_is_written_outside(local: LocalSide, dirs: tuple[pathlib.Path, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = dirs
    real_token, swap = secrets.token_hex, swapper(root, outside)

    def token_then_swap(*args: Any) -> str:
        swap()  # the temporary file's name is drawn once the target's folder was checked: a leads outside now
        return real_token(*args)

    # The content is here already (at src.txt): copied to a/copy, nothing fetched.
    (root / "src.txt").write_bytes(b"content")
    source = Entry(path="src.txt", size=7, file_id=sha256(b"content"), mode=0o644, mtime_ns=0, version=((ME, 1),), modified_by=ME)
    local.index.record(source, stat_of(root / "src.txt"), dirty=False)
    entry = Entry(path="a/copy", size=7, file_id=sha256(b"content"), mode=0o644, mtime_ns=1_600_000_000 * 10**9, version=((THEM, 1),),
                  modified_by=THEM)  # fmt: skip
    monkeypatch.setattr(secrets, "token_hex", token_then_swap)
    await Applier(local, fsync=False).apply(Plan(take=(entry,)))
    monkeypatch.undo()
    assert (root / "a").is_symlink()
    assert list(outside.iterdir()) == []


async def test_nothing_is_removed_outside(local: LocalSide, dirs: tuple[pathlib.Path, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = dirs
    twin(root / "a/x", outside / "x", b"inside!", b"keep me")
    stat = stat_of(root / "a/x")
    entry = Entry(path="a/x", size=7, file_id=sha256(b"inside!"), mode=stat.mode if stat else 0, mtime_ns=0, version=((THEM, 1),), modified_by=THEM)
    local.index.record(entry, stat, dirty=False)
    tombstone = local_deletion(entry, me=THEM, now_ns=1)
    real_unlink, swap = os.unlink, swapper(root, outside)

    def swap_then_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        swap()  # checked unchanged; a leads outside before the unlink
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", swap_then_unlink)
    await Applier(local, fsync=False).apply(Plan(take=(tombstone,)))
    monkeypatch.undo()
    assert (outside / "x").read_bytes() == b"keep me"
    assert not (root / "parked/x").exists()  # the file checked is the one removed


async def test_a_fifo_swapped_in_is_not_opened(local: LocalSide, dirs: tuple[pathlib.Path, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A file swapped for a FIFO between listing and hashing: refused, not waited on."""
    root, _outside = dirs
    (root / "a/f").write_bytes(b"data")
    real_scan = local_module.scan_folder

    def scan_then_swap(*args: Any) -> Any:
        found = real_scan(*args)
        os.unlink(root / "a/f")
        os.mkfifo(root / "a/f")
        return found

    monkeypatch.setattr(local_module, "scan_folder", scan_then_swap)
    with trio.fail_after(20):
        await local.scan()
    assert "a/f" not in local.index.entries
