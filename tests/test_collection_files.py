"""A collection on disk (peer/collection_files.py, peer/collection_transfer.py): safe paths, kept state, proofs, scans."""

from __future__ import annotations

import json
import os
import pathlib

import attrs
import pytest

from common.collection import CollectionVersion, Entry, sign_version, vv_compare
from common.errors import IntegrityError, StorageError, ValidationError
from common.identity import NodeKey
from common.manifest import build_manifest
from peer.collection_files import STATE_DIR, FileProof, load_kept, make_proof, safe_target, save_kept, verify_file
from peer.collection_transfer import _entries, scan_tree

KEY = NodeKey.generate()


def _version(folder: pathlib.Path) -> tuple[CollectionVersion, dict[str, pathlib.Path]]:
    paths = {}
    entries = []
    for relative, content in (("a.txt", b"alpha"), ("sub/b.bin", os.urandom(5000)), ("sub/deep/c", b"")):
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        manifest = build_manifest(path, chunk_size=1024)
        entries.append(Entry(relative, manifest.size, manifest.file_id, 0o644, 0))
        paths[relative] = path
    return sign_version(KEY, "set", 1, bytes(32), entries, [KEY.public_key]), paths


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b", f"{STATE_DIR}/set.version", ""])
def test_paths_that_leave_the_folder_are_refused(tmp_path: pathlib.Path, path: str) -> None:
    with pytest.raises(StorageError, match="refusing"):
        safe_target(tmp_path / "out", path)


def test_symbolic_links_are_never_followed(tmp_path: pathlib.Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "sub").symlink_to(outside)
    with pytest.raises(StorageError, match="symbolic link"):
        safe_target(out, "sub/evil.txt")
    (out / "inside").mkdir()
    (out / "file").symlink_to(out / "inside" / "target")  # even a link that points inside
    with pytest.raises(StorageError, match="symbolic link"):
        safe_target(out, "file")
    assert safe_target(out, "new/deeper/x.txt") == out / "new" / "deeper" / "x.txt"
    assert (out / "new" / "deeper").is_dir() and not list(outside.iterdir())


def test_kept_state_round_trips_and_a_changed_summary_is_refused(tmp_path: pathlib.Path) -> None:
    version, _ = _version(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    assert load_kept(out, "set") is None
    save_kept(out, version)
    assert load_kept(out, "set") == version
    summary = json.loads((out / STATE_DIR / "set.json").read_text())
    assert summary == {"collection": "set", "root": version.root.hex(), "sequence": 1, "files": 3}
    summary["files"] = 4
    (out / STATE_DIR / "set.json").write_text(json.dumps(summary))
    with pytest.raises(IntegrityError, match="does not match"):
        load_kept(out, "set")


def test_a_file_proof_verifies_against_the_kept_root_only(tmp_path: pathlib.Path) -> None:
    version, paths = _version(tmp_path)
    proof = FileProof.from_json(make_proof(version, "sub/b.bin", 1024).to_json())
    root = version.root
    assert verify_file(paths["sub/b.bin"], proof, root).path == "sub/b.bin"
    with pytest.raises(IntegrityError, match="content differs"):
        verify_file(paths["a.txt"], proof, root)
    with pytest.raises(IntegrityError, match="does not place"):
        verify_file(paths["sub/b.bin"], proof, bytes(32))
    with pytest.raises(IntegrityError, match="does not place"):  # a proof edited to fit another file
        forged = attrs.evolve(proof, entry=attrs.evolve(proof.entry, size=5, file_id=build_manifest(paths["a.txt"], 1024).file_id))
        verify_file(paths["a.txt"], forged, root)
    with pytest.raises(IntegrityError, match="does not place"):
        verify_file(paths["sub/b.bin"], attrs.evolve(proof, proof=(bytes(32), *proof.proof[1:])), root)
    with pytest.raises(ValidationError, match="not a collection proof"):
        FileProof.from_json('{"entry": 3}')


def test_scan_skips_links_and_state_and_new_entries_bump_version_vectors(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "src"
    (folder / "d").mkdir(parents=True)
    (folder / "d" / "f").write_bytes(b"1")
    (folder / "g").write_bytes(b"2")
    (folder / "link").symlink_to(folder / "g")
    (folder / STATE_DIR).mkdir()
    (folder / STATE_DIR / "x.version").write_bytes(b"")
    warnings: list[str] = []
    scanned = scan_tree(folder, warnings.append)
    assert [relative for relative, _ in scanned] == ["d/f", "g"]
    assert any("link" in warning for warning in warnings)
    node = KEY.node_id[:8]
    files = {relative: (build_manifest(path, 1024), path.stat()) for relative, path in scanned}
    first = _entries(None, files, node)
    assert all(entry.version == ((node, 1),) and entry.modified_by == node for entry in first)
    v1 = sign_version(KEY, "s", 1, bytes(32), first, [KEY.public_key])
    (folder / "g").write_bytes(b"changed")
    del files["d/f"]
    files["g"] = (build_manifest(folder / "g", 1024), (folder / "g").stat())
    second = {entry.path: entry for entry in _entries(v1, files, node)}
    assert second["d/f"].deleted and second["d/f"].version == ((node, 2),)
    assert second["g"].version == ((node, 2),) and vv_compare(v1.entries[1].version, second["g"].version) == "before"
    v2 = sign_version(KEY, "s", 2, v1.root, second.values(), [KEY.public_key])
    again = _entries(v2, files, node)
    assert sorted(again, key=lambda e: e.path) == list(v2.entries)  # nothing changed: nothing bumped, the deletion kept
