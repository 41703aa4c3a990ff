"""Which watcher events call for a scan (``peer/sync/watch.py``): none of the engine's own writes, every change of anyone else."""

from __future__ import annotations

import os
import pathlib

from peer.sync.fsops import TEMP_MARK, Stat
from peer.sync.watch import needs_scan, relative_of


def recorded(root: pathlib.Path, *paths: str) -> dict[str, Stat]:
    return {path: Stat.of(os.lstat(root / path)) for path in paths}


def test_files_as_recorded_need_no_scan_and_any_other_change_does(tmp_path: pathlib.Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("a.txt", "d/b.txt", "d/c.txt"):
        (tmp_path / name).write_text(name)
    stats = recorded(tmp_path, "a.txt", "d/b.txt", "d/c.txt")
    (tmp_path / f"d/.c.txt{TEMP_MARK}1234").write_text("a write in progress")
    root = str(tmp_path)
    assert not needs_scan(tmp_path, stats, [f"{root}/a.txt", f"{root}/d/b.txt"])  # written here, recorded
    assert not needs_scan(tmp_path, stats, [f"{root}/d"])  # a folder made for files written here
    assert not needs_scan(tmp_path, stats, [f"{root}/gone.txt"])  # removed here, no longer in the index
    os.utime(tmp_path / "d/c.txt", ns=(1, 1))
    assert needs_scan(tmp_path, stats, [f"{root}/d/c.txt"])  # changed since it was recorded
    assert needs_scan(tmp_path, stats, [f"{root}/d"])
    stats = recorded(tmp_path, "a.txt", "d/b.txt", "d/c.txt")
    (tmp_path / "d/new.txt").write_text("new")
    assert needs_scan(tmp_path, stats, [f"{root}/d/new.txt"])
    assert needs_scan(tmp_path, stats, [f"{root}/d"])  # a folder with a file the index does not have (moved in whole)
    os.unlink(tmp_path / "a.txt")
    assert needs_scan(tmp_path, stats, [f"{root}/a.txt"])  # a file of the index deleted
    (tmp_path / "d/new.txt").unlink()
    os.rename(tmp_path / "d", tmp_path / "e")
    assert needs_scan(tmp_path, stats, [f"{root}/d"])  # a folder of the index gone
    (tmp_path / "link").symlink_to("e")
    assert needs_scan(tmp_path, stats, [f"{root}/link"])
    assert needs_scan(tmp_path, stats, [root])  # the folder itself


def test_relative_of() -> None:
    assert relative_of("/r", "/r/a/b") == "a/b"
    assert relative_of("/r", "/r") is None
    assert relative_of("/r", "/rx/a") is None


def test_a_folder_of_the_index_moved_out_and_made_again_needs_a_scan(tmp_path: pathlib.Path) -> None:
    # One event, for the folder's name: what is found below it is as recorded, but not all that is recorded.
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/a.txt", "d/e/b.txt", "other.txt"):
        (tmp_path / name).write_text(name)
    stats = recorded(tmp_path, "d/a.txt", "d/e/b.txt", "other.txt")
    root = str(tmp_path)
    assert not needs_scan(tmp_path, stats, [f"{root}/d"])
    os.rename(tmp_path / "d", tmp_path.parent / f"{tmp_path.name}-away")
    (tmp_path / "d").mkdir()
    assert needs_scan(tmp_path, stats, [f"{root}/d"])
    (tmp_path / "d").rmdir()
    os.rename(tmp_path.parent / f"{tmp_path.name}-away", tmp_path / "d")
    os.rename(tmp_path / "d" / "e", tmp_path.parent / f"{tmp_path.name}-e")
    assert needs_scan(tmp_path, stats, [f"{root}/d"])


def test_a_file_of_the_index_replaced_by_an_empty_folder_needs_a_scan(tmp_path: pathlib.Path) -> None:
    # rm f; mkdir f: one batch, one path; nothing below the folder, but the file the index holds is gone.
    (tmp_path / "f").write_text("f")
    stats = recorded(tmp_path, "f")
    (tmp_path / "f").unlink()
    (tmp_path / "f").mkdir()
    assert needs_scan(tmp_path, stats, [f"{tmp_path}/f"])
