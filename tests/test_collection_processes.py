"""Collections as real processes: ``publish DIR --collection``, ``get --collection -o DIR``, ``collection allow | show | proof | verify``."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
import trio

from common.collection import Entry
from peer.collection_files import STATE_DIR
from tests.procs import ROOT, spawn, start_tracker

pytestmark = pytest.mark.slow


def _tree(folder: pathlib.Path) -> None:
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "big.bin").write_bytes(os.urandom(700_000))
    (folder / "a.txt").write_bytes(b"hello\n")
    (folder / "sub" / "copy.txt").write_bytes(b"hello\n")  # the same content twice: fetched once
    (folder / "sub" / "deeper" / "d.txt").write_bytes(b"deep\n")
    (folder / "empty").write_bytes(b"")
    (folder / "a.txt").chmod(0o600)
    os.utime(folder / "a.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def _files(folder: pathlib.Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``folder`` (its state left out): content, mode, mtime."""
    found = {}
    for path in folder.rglob("*"):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not relative.startswith(STATE_DIR):
            stat = path.stat()
            found[relative] = (path.read_bytes(), stat.st_mode & 0o7777, stat.st_mtime_ns)
    return found


def _cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chunkswarm", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250", "PYTHONPATH": str(ROOT)})  # fmt: skip


async def _run(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: _cli(*args, cwd=cwd))


async def test_publish_a_tree_get_it_prove_a_file_and_change_owners(tmp_path: pathlib.Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _tree(src)
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port):
            tracker = ["--tracker", f"127.0.0.1:{port}"]
            owner = [*tracker, "--state-dir", str(tmp_path / "owner")]
            async with spawn(nursery, "-m", "chunkswarm", "publish", str(src), "--collection", "photos", *owner, name="publish") as pub:
                found = await pub.wait_for(r"collection 'photos' published at version 1 \(root ([0-9a-f]{64})\): 5 files")
                root = found.group(1)
                got = await _run("get", "--collection", "photos", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "g"), cwd=tmp_path)
                assert got.returncode == 0, got.stderr
                assert f"version 1 root {root}" in got.stdout and "4 fetched" in got.stdout  # copy.txt: copied, not fetched
                assert _files(out) == _files(src)  # contents, modes, modification times
                # The proof of one file, checked against the root kept, by a command that needs no tracker.
                proof = tmp_path / "d.proof"
                made = await _run("collection", "proof", "photos", "sub/deeper/d.txt", "-o", str(proof), *tracker, cwd=tmp_path)
                assert made.returncode == 0, made.stderr
                checked = _cli("collection", "verify", str(out / "sub/deeper/d.txt"), "--root", root, "--proof", str(proof), cwd=tmp_path)
                assert checked.returncode == 0 and "verified" in checked.stdout, checked.stderr
                (out / "sub/deeper/d.txt").write_bytes(b"DEEP\n")  # tampered
                refused = _cli("collection", "verify", str(out / "sub/deeper/d.txt"), "--root", root, "--proof", str(proof), cwd=tmp_path)
                assert refused.returncode == 1 and "NOT VERIFIED" in refused.stderr
                (out / "sub/deeper/d.txt").write_bytes(b"deep\n")
                # Another node may not change it until an owner allows it.
                other = [*tracker, "--state-dir", str(tmp_path / "other")]
                ident = _cli("id", "--state-dir", str(tmp_path / "other"), cwd=tmp_path)
                key = re.search(r"public key ([0-9a-f]{64})", ident.stdout)
                assert key, ident.stdout
                (src / "new.txt").write_bytes(b"new\n")
                refused = await _run("publish", str(src), "--collection", "photos", "--no-serve", *other, cwd=tmp_path)
                assert refused.returncode == 1 and "not an owner" in refused.stderr
                allowed = await _run("collection", "allow", "photos", key.group(1), *owner, cwd=tmp_path)
                assert allowed.returncode == 0 and "version 2" in allowed.stdout, allowed.stderr
                shown = await _run("collection", "show", "photos", *tracker, cwd=tmp_path)
                assert "version 2" in shown.stdout and shown.stdout.count("owner ") == 2 and "sub/deeper/d.txt" in shown.stdout
            # The other node publishes version 3 (serving it: the first publisher has stopped).
            async with spawn(nursery, "-m", "chunkswarm", "publish", str(src), "--collection", "photos", *other, name="other") as pub:
                await pub.wait_for(r"published at version 3 .*6 files")
                again = await _run("get", "--collection", "photos", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "g"),
                                   cwd=tmp_path)  # fmt: skip
                assert again.returncode == 0, again.stderr
                assert "version 3" in again.stdout and "1 fetched" in again.stdout  # the rest was in place
                assert _files(out) == _files(src)
            nursery.cancel_scope.cancel()


async def test_get_refuses_a_version_that_does_not_follow_and_paths_outside_the_folder(tmp_path: pathlib.Path) -> None:
    src, out, outside = tmp_path / "src", tmp_path / "out", tmp_path / "outside"
    _tree(src)
    outside.mkdir()
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t1.db") as (_, port):
            tracker = ["--tracker", f"127.0.0.1:{port}"]
            async with spawn(nursery, "-m", "chunkswarm", "publish", str(src), "--collection", "set", *tracker, "--state-dir",
                             str(tmp_path / "owner"), name="publish") as pub:  # fmt: skip
                await pub.wait_for(r"published at version 1")
                got = await _run("get", "--collection", "set", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "g"), cwd=tmp_path)
                assert got.returncode == 0, got.stderr
                # A symbolic link planted in the folder: the next version's file under it is refused, nothing written outside.
                (out / "sub" / "deeper" / "d.txt").unlink()
                (out / "sub" / "deeper").rmdir()
                (out / "sub" / "deeper").symlink_to(outside)
                (src / "sub" / "deeper" / "e.txt").write_bytes(b"e\n")
                published = await _run("publish", str(src), "--collection", "set", "--no-serve", *tracker, "--state-dir",
                                       str(tmp_path / "owner2"), cwd=tmp_path)  # fmt: skip
                assert published.returncode == 1  # another key: not an owner
                pub.signal(2)
                await pub.wait_exit()
            async with spawn(nursery, "-m", "chunkswarm", "publish", str(src), "--collection", "set", *tracker, "--state-dir",
                             str(tmp_path / "owner"), name="publish") as pub:  # fmt: skip
                await pub.wait_for(r"published at version 2")
                got = await _run("get", "--collection", "set", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "g"), cwd=tmp_path)
                assert got.returncode == 1 and "symbolic link" in got.stderr, got.stderr
                assert not list(outside.iterdir())
        # Another tracker whose "set" was started by someone else: not the one this folder follows.
        async with start_tracker(nursery, tmp_path / "t2.db") as (_, port):
            tracker = ["--tracker", f"127.0.0.1:{port}"]
            (src / "sub" / "deeper" / "e.txt").unlink()
            async with spawn(nursery, "-m", "chunkswarm", "publish", str(src), "--collection", "set", *tracker, "--state-dir",
                             str(tmp_path / "mallory"), name="mallory") as pub:  # fmt: skip
                await pub.wait_for(r"published at version 1")
                got = await _run("get", "--collection", "set", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "g"), cwd=tmp_path)
                assert got.returncode == 1 and "does not follow" in got.stderr, got.stderr
        nursery.cancel_scope.cancel()


def test_entry_paths_are_checked_before_anything_is_written() -> None:
    with pytest.raises(ValueError):
        Entry("../../etc/passwd", 1, b"x" * 32, 0o644, 0)
