"""peer/sync/fsops.py and scan.py: safe, atomic writes into a synced folder, and scans (races: test_sync_beneath.py)."""

from __future__ import annotations

import os
import pathlib

import pytest

from common.errors import StorageError, ValidationError
from peer.sync.beneath import Folders, Root
from peer.sync.fsops import ChangedLocally, Stat, Written, copy_atomic, remove_batch, remove_file, stat_of, write_atomic, write_batch
from peer.sync.scan import scan_folder


def _write(path: pathlib.Path, data: bytes) -> Stat:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = stat_of(path)
    assert st is not None
    return st


def test_paths_stay_inside(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with Folders(Root(root)) as folders:
        fd, name = folders.parent("a/b/c.txt", create=True)
        assert name == "c.txt" and os.path.samestat(os.fstat(fd), os.stat(root / "a/b"))
        for hostile in ("../x", "/etc/passwd", "a/../../x", ".chunkswarm/index"):
            with pytest.raises(ValidationError):
                folders.parent(hostile)
        outside = tmp_path / "outside"
        outside.mkdir()
        os.symlink(outside, root / "link")
        with pytest.raises(StorageError, match="symbolic link"):
            folders.parent("link/x.txt", create=True)
        (root / "file").write_bytes(b"")
        with pytest.raises(StorageError, match="not a folder"):
            folders.parent("file/x.txt", create=True)
    assert list(outside.iterdir()) == []


def test_write_atomic_never_overwrites_a_local_change(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "f.txt"
    root = Root(tmp_path)
    st = write_atomic(root, "f.txt", b"one", None, mtime_ns=1_600_000_000 * 10**9, mode=0o640, fsync=True)
    assert target.read_bytes() == b"one" and st.mtime_ns == 1_600_000_000 * 10**9 and st.mode == 0o640
    assert write_atomic(root, "f.txt", b"two", st, mtime_ns=st.mtime_ns + 1, mode=0o644, fsync=False).size == 3
    assert target.read_bytes() == b"two"
    # Written on this node since the last scan (the recorded stat is the old one): kept, with a clear error.
    with pytest.raises(ChangedLocally):
        write_atomic(root, "f.txt", b"three", st, mtime_ns=0, mode=0o644, fsync=False)
    assert target.read_bytes() == b"two"
    # A file where the node believed there was none.
    with pytest.raises(ChangedLocally):
        write_atomic(root, "f.txt", b"three", None, mtime_ns=0, mode=0o644, fsync=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary file left behind


def test_copy_and_remove(tmp_path: pathlib.Path) -> None:
    root = tmp_path
    source_stat = _write(root / "a.bin", b"x" * 5000)
    target = root / "sub/deeper/b.bin"
    copied = copy_atomic(Root(root), "a.bin", source_stat, "sub/deeper/b.bin", None, mtime_ns=source_stat.mtime_ns, mode=0o600, fsync=False)
    assert target.read_bytes() == b"x" * 5000 and copied.mode == 0o600
    with pytest.raises(ChangedLocally):  # the source is no longer what was scanned
        copy_atomic(Root(root), "a.bin", Stat(1, 1, 0), "c.bin", None, mtime_ns=0, mode=0o600, fsync=False)
    with pytest.raises(ChangedLocally):
        remove_file(Root(root), "sub/deeper/b.bin", source_stat if source_stat.mtime_ns != copied.mtime_ns else Stat(1, 1, 0))
    remove_file(Root(root), "sub/deeper/b.bin", copied)
    assert not (root / "sub").exists()  # the empty folders went with it
    assert (root / "a.bin").exists() and root.exists()


def test_write_batch_keeps_every_guarantee(tmp_path: pathlib.Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    edited = _write(root / "kept/edited.txt", b"edited here")
    os.symlink(outside, root / "link")
    jobs = [("new/a.txt", b"a" * 3000, None, 1_600_000_000 * 10**9, 0o640), ("kept/edited.txt", b"remote", Stat(1, 1, 0o644), 0, 0o644),
            ("kept/there.txt", b"remote", None, 0, 0o644), ("../escape.txt", b"x", None, 0, 0o644), ("link/x.txt", b"x", None, 0, 0o644),
            ("kept/edited.txt/under.txt", b"x", None, 0, 0o644), ("new/b.txt", b"b", None, 7, 0o600)]  # fmt: skip
    (root / "kept/there.txt").write_bytes(b"appeared here")
    results = write_batch(Root(root), jobs, fsync=True)
    written = results[0]
    assert isinstance(written, Written) and written.stat.mode == 0o640 and written.stat.mtime_ns == 1_600_000_000 * 10**9
    assert os.pread(written.fd, 5000, 0) == b"a" * 3000 and written.stat == stat_of(root / "new/a.txt")  # the descriptor serves what was written
    os.close(written.fd)
    assert isinstance(results[1], ChangedLocally) and (root / "kept/edited.txt").read_bytes() == b"edited here" and edited.size == 11
    assert isinstance(results[2], ChangedLocally) and (root / "kept/there.txt").read_bytes() == b"appeared here"
    assert isinstance(results[3], ValidationError)
    assert isinstance(results[4], StorageError) and "symbolic link" in str(results[4])
    assert isinstance(results[5], StorageError) and "not a folder" in str(results[5])
    last = results[6]
    assert isinstance(last, Written) and (root / "new/b.txt").read_bytes() == b"b" and last.stat.mode == 0o600
    os.close(last.fd)
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.txt").exists()
    left = [path.name for path in root.rglob("*") if "chunkswarm-tmp" in path.name]
    assert left == []  # no temporary file left behind, written or not


def test_remove_batch(tmp_path: pathlib.Path) -> None:
    root = tmp_path
    stats = {path: _write(root / path, path.encode()) for path in ("d/e/one.txt", "d/two.txt", "three.txt", "f/changed.txt")}
    (root / "f/changed.txt").write_bytes(b"edited here, longer")
    results = remove_batch(Root(root), [("d/e/one.txt", stats["d/e/one.txt"]), ("d/two.txt", stats["d/two.txt"]), ("three.txt", stats["three.txt"]),
                                               ("f/changed.txt", stats["f/changed.txt"]), ("never/was.txt", None), ("../x", None)])  # fmt: skip
    assert results[:3] == [None, None, None] and results[4] is None
    assert isinstance(results[3], ChangedLocally) and isinstance(results[5], ValidationError)
    assert sorted(str(path.relative_to(root)) for path in root.rglob("*")) == ["f", "f/changed.txt"]  # the emptied folders went too


def test_scan(tmp_path: pathlib.Path) -> None:
    root = tmp_path
    _write(root / "a.txt", b"a")
    _write(root / "sub/b.txt", b"bb")
    _write(root / "sub/x.tmp", b"ignored")
    _write(root / "build/out.o", b"ignored")
    _write(root / ".chunkswarm/index", b"state")
    _write(root / "sub/.b.txt.chunkswarm-tmp-0011", b"in progress")
    _write(root / "CON.txt", b"windows")
    _write(root / "Readme", b"1")
    _write(root / "README", b"2")
    (root / ".chunkswarmignore").write_text("*.tmp\nbuild/\n")
    os.symlink("/etc/passwd", root / "link")
    scan = scan_folder(root)
    assert sorted(scan.files) == [".chunkswarmignore", "CON.txt", "README", "Readme", "a.txt", "sub/b.txt"]
    assert scan.files["sub/b.txt"].size == 2
    text = "\n".join(scan.problems)
    assert "link: a symbolic link" in text and "reserved name on Windows" in text and "differ only in case" in text


@pytest.mark.parametrize("hostile", ["../x", "/etc/passwd", "a/../../x", "a//b"])
def test_a_signed_version_naming_a_path_outside_is_refused(hostile: str) -> None:
    """A version properly signed by an owner, whose entry names a path outside the folder: refused when it is read."""
    import attrs
    import msgpack

    from common.collection import Entry, decode_version, entry_leaf, signed_message
    from common.identity import NodeKey
    from common.manifest import ZERO_HASH, merkle_root, sha256

    key = NodeKey.generate()
    entry = Entry(path="x", size=1, file_id=sha256(b"x"), mode=0o644, mtime_ns=0, version=((b"A" * 8, 1),), modified_by=b"A" * 8)
    forged = Entry.__new__(Entry)
    for field in attrs.fields(Entry):
        object.__setattr__(forged, field.name, getattr(entry, field.name))
    object.__setattr__(forged, "path", hostile)  # past Entry's own validation, as a hostile node would write it
    root = merkle_root([entry_leaf(forged)])
    signature = key.sign(signed_message("shared", 1, ZERO_HASH, root, [key.public_key]))
    data = msgpack.packb(["shared", 1, ZERO_HASH, [forged.to_fields()], [key.public_key], key.public_key, signature], use_bin_type=True)
    with pytest.raises(ValidationError):
        decode_version(data)
    with pytest.raises(ValidationError):  # and were it ever taken, no write would be made there
        Folders(Root(pathlib.Path("/nonexistent-root"))).parent(hostile)


def test_remove_batch_keeps_the_folders_written_into_meanwhile(tmp_path: pathlib.Path) -> None:
    # An apply removes while it writes: a folder a fetched file is about to land in is not pruned under it.
    root = tmp_path
    stats = {path: _write(root / path, b"x") for path in ("d/one.txt", "e/two.txt")}
    assert remove_batch(Root(root), [(path, stat) for path, stat in stats.items()], keep=frozenset({"d"})) == [None, None]
    assert sorted(str(path.relative_to(root)) for path in root.rglob("*")) == ["d"]
