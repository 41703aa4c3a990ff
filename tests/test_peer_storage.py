"""peer/storage/: part files, resume state, manifest cache, chunk I/O, read-back, placement, change detection."""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

from common.chunkset import ChunkSet
from common.errors import IntegrityError, StorageError
from common.manifest import build_manifest
from peer.storage import manifest_cache
from peer.storage.chunk_io import direct_aligned, hash_chunks, hash_range, read_chunk, verify_and_write
from peer.storage.fs import memory_backed
from peer.storage.library import expand_paths, open_published
from peer.storage.manifest_cache import ManifestCache
from peer.storage.part_file import PartFile, place_file
from peer.storage.read_back import ReadBack

CHUNK = 1024


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "src" / "data.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(10 * CHUNK + 100))
    return path


def test_expand_paths(tmp_path: pathlib.Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/b", "d/a", "d/sub/c"):
        (tmp_path / name).write_text(name)
    assert [p.relative_to(tmp_path).as_posix() for p in expand_paths([tmp_path / "d"])] == ["d/a", "d/b", "d/sub/c"]
    with pytest.raises(StorageError):
        expand_paths([tmp_path / "nope"])


def test_manifest_cache_hits_and_misses(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    cache = ManifestCache(tmp_path / "state")
    manifest, _signature, cached = cache.manifest_for(source, CHUNK)
    assert not cached and manifest == build_manifest(source, CHUNK)
    again, _, cached = cache.manifest_for(source, CHUNK)
    assert cached and again == manifest
    _, _, cached = cache.manifest_for(source, 2 * CHUNK)  # another chunk size
    assert not cached
    source.write_bytes(source.read_bytes()[:-1])  # size changes
    changed, _, cached = cache.manifest_for(source, CHUNK)
    assert not cached and changed.file_id != manifest.file_id


def test_published_file_withdrawn_when_changed(source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    st = os.stat(source)
    held = open_published(source, manifest, (st.st_size, st.st_mtime_ns))
    try:
        assert held.offers(0)
        assert read_chunk(held.fd, 0, CHUNK) == source.read_bytes()[:CHUNK]
        with open(source, "ab") as handle:
            handle.write(b"more")
        assert not held.offers(0) and held.withdrawn
    finally:
        held.close()


def test_verify_and_write_rejects_bad_data(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    part = PartFile(manifest, tmp_path / "out" / manifest.name)
    assert part.open() == []
    try:
        assert os.path.getsize(part.path) == manifest.size
        data = source.read_bytes()
        with pytest.raises(IntegrityError):
            verify_and_write(manifest, part.fd, 3, b"x" * CHUNK)
        assert read_chunk(part.fd, 3 * CHUNK, CHUNK) == bytes(CHUNK)  # nothing written
        verify_and_write(manifest, part.fd, 10, memoryview(data)[10 * CHUNK :])
        assert read_chunk(part.fd, 10 * CHUNK, 100) == data[10 * CHUNK :]
    finally:
        part.close()


def test_chunks_written_and_checked_past_the_page_cache(tmp_path: pathlib.Path) -> None:
    """Aligned chunks go through the O_DIRECT descriptor, the unaligned last one through the ordinary one."""
    chunk = 64 * 1024
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(3 * chunk + 100))
    manifest = build_manifest(source, chunk)
    data = source.read_bytes()
    part = PartFile(manifest, tmp_path / "out" / manifest.name, direct_io=True)
    part.open()
    try:
        if part.direct_fd < 0:
            pytest.skip("this file system has no O_DIRECT (tmpfs, some overlays); the page-cache path is tested without it")
        assert [direct_aligned(manifest, i) for i in range(4)] == [True, True, True, False]
        for index in range(4):
            fd = part.direct_fd if direct_aligned(manifest, index) else part.fd
            # From an unaligned view: verify_and_write bounces it through an aligned buffer.
            verify_and_write(manifest, fd, index, memoryview(b"x" + data)[1 + index * chunk : 1 + (index + 1) * chunk])
        assert hash_chunks(manifest, part.fd, range(4), part.direct_fd) == [0, 1, 2, 3]
        assert os.pread(part.fd, len(data) + 10, 0) == data  # the ordinary descriptor sees the same bytes
        os.pwrite(part.fd, b"y", 5)  # a buffered change is seen by the direct read-back too
        assert hash_chunks(manifest, part.fd, range(4), part.direct_fd) == [1, 2, 3]
    finally:
        part.close()


def test_resume_state_is_reverified(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    data = source.read_bytes()
    part = PartFile(manifest, tmp_path / "out" / manifest.name)
    part.open()
    for index in (0, 1, 5):
        verify_and_write(manifest, part.fd, index, data[index * CHUNK : (index + 1) * CHUNK])
    # The state claims chunk 7 too, which was never written (as after a crash).
    part.save_state(ChunkSet.from_indexes(manifest.chunk_count, [0, 1, 5, 7]))
    part.close()

    again = PartFile(manifest, tmp_path / "out" / manifest.name)
    claimed = again.open()
    assert claimed == [0, 1, 5, 7]
    try:
        assert hash_chunks(manifest, again.fd, claimed) == [0, 1, 5]
    finally:
        again.close()


def test_resume_state_of_truncated_part_file(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    data = source.read_bytes()
    part = PartFile(manifest, tmp_path / "out" / manifest.name)
    part.open()
    for index in range(manifest.chunk_count):
        verify_and_write(manifest, part.fd, index, data[index * CHUNK : (index + 1) * CHUNK])
    part.save_state(ChunkSet.full(manifest.chunk_count))
    part.close()
    os.truncate(part.path, 4 * CHUNK)
    again = PartFile(manifest, part.final_path)
    try:
        assert again.open() == [0, 1, 2, 3]
        assert os.path.getsize(again.path) == manifest.size
    finally:
        again.close()


def test_state_for_another_file_is_not_ours(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    other = build_manifest(source, 2 * CHUNK)
    part = PartFile(other, tmp_path / manifest.name)
    part.open()
    part.save_state(ChunkSet.full(other.chunk_count))
    part.close()
    with pytest.raises(StorageError, match=r"is in the way: .* resume state is of another file.*--force"):
        PartFile(manifest, tmp_path / manifest.name).open()
    again = PartFile(manifest, tmp_path / manifest.name)
    assert again.open(force=True) == []
    again.close()


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000 + b"]" * 100_000, b"{", b"42", b"\xff\xfe", b" " * (17 * 1024 * 1024)],
    ids=["nested too deep", "cut short", "not an object", "not text", "too large"],
)
def test_a_damaged_state_file_is_not_ours(tmp_path: pathlib.Path, source: pathlib.Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    manifest = build_manifest(source, CHUNK)
    part = PartFile(manifest, tmp_path / manifest.name)
    part.state_path.write_bytes(content)
    with pytest.raises(StorageError, match=r"unreadable.*--force"):
        part.open()
    assert part.state_path.read_bytes() == content and not part.path.exists()
    assert part.open(force=True) == []
    part.close()
    assert any("replacing" in r.getMessage() and "--force" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("with_state", [False, True], ids=["alone", "with a state of another file"])
def test_a_part_file_not_ours_is_never_truncated(tmp_path: pathlib.Path, source: pathlib.Path, with_state: bool) -> None:
    """Finding 8: ``get X`` left an existing ``X.part`` (and its state) as it was only with --force."""
    manifest = build_manifest(source, CHUNK)
    out = tmp_path / "out"
    out.mkdir()
    part = PartFile(manifest, out / manifest.name)
    part.path.write_bytes(b"someone's notes")
    if with_state:
        part.state_path.write_text('{"version": 1, "file_id": "00", "chunk_size": 1, "done": []}')
    before = {path: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(StorageError, match=f"{part.path} is in the way: it is not a download of {manifest.name} in progress.*--force"):
        part.open()
    assert {path: path.read_bytes() for path in out.iterdir()} == before


def test_a_fresh_part_file_has_its_state_from_the_start(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    """Killed before its first chunk, a download still finds its part file its own."""
    manifest = build_manifest(source, CHUNK)
    part = PartFile(manifest, tmp_path / manifest.name)
    part.open()
    part.close()
    again = PartFile(manifest, tmp_path / manifest.name)
    assert part.state_path.exists() and again.open() == []
    again.close()


def test_place_file_never_overwrites_a_different_file(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    part = tmp_path / "x.part"
    final = tmp_path / "x"
    part.write_bytes(source.read_bytes())
    final.write_bytes(b"precious")
    with pytest.raises(StorageError, match="--force"):
        place_file(part, final, manifest, force=False)
    assert final.read_bytes() == b"precious" and part.exists()
    place_file(part, final, manifest, force=True)
    assert final.read_bytes() == source.read_bytes() and not part.exists()
    # The same content already in place: fine, the part file goes.
    part.write_bytes(source.read_bytes())
    place_file(part, final, manifest, force=False)
    assert not part.exists()


def test_unwritable_output_is_a_storage_error(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot"):
        PartFile(manifest, blocker / "sub" / manifest.name).open()


def test_disk_full_is_reported_before_downloading(tmp_path: pathlib.Path, source: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = build_manifest(source, CHUNK)
    real = os.fstatvfs

    class Full:
        def __init__(self, fd: int) -> None:
            self.f_frsize = real(fd).f_frsize
            self.f_bavail = 0

    monkeypatch.setattr(os, "fstatvfs", Full)
    with pytest.raises(StorageError, match="disk full"):
        PartFile(manifest, tmp_path / "out" / manifest.name).open()


def test_part_files_use_the_page_cache_unless_direct_io_is_asked_for(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(8192))
    manifest = build_manifest(source, 4096)
    part = PartFile(manifest, tmp_path / "out" / manifest.name)
    part.open()
    try:
        assert part.direct_fd == -1
    finally:
        part.close()


@pytest.mark.parametrize("direct_io", [False, True])
def test_written_chunks_are_read_back_once_out_of_the_window(tmp_path: pathlib.Path, direct_io: bool) -> None:
    chunk = 4096
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(6 * chunk))
    manifest = build_manifest(source, chunk)
    data = source.read_bytes()
    part = PartFile(manifest, tmp_path / "out" / manifest.name, direct_io=direct_io)
    part.open()
    try:
        read_back = ReadBack(manifest, part.fd, 2 * chunk, part.direct_fd)
        order = [4, 0, 5, 1, 3, 2]
        lost = []
        for _step, index in enumerate(order):
            fd = part.direct_fd if part.direct_fd >= 0 else part.fd
            piece = memoryview(data)[index * chunk : (index + 1) * chunk]
            verify_and_write(manifest, fd, index, piece)
            if index == 0:
                os.pwrite(part.fd, b"\xff" * 10, 100)  # the device "loses" chunk 0 while it is young
            lost.append(read_back.wrote(index, piece))
        # Chunk 4 leaves the two-chunk window when the third chunk is written, chunk 0 with the fourth.
        assert lost == [[], [], [], [0], [], []]
        verify_and_write(manifest, part.fd, 0, data[:chunk])  # fetched again
        assert read_back.wrote(0, data[:chunk]) == []
        os.pwrite(part.fd, b"\xff", 2 * chunk)  # chunk 2 goes bad while it is still in the window
        assert sorted(read_back.finish(0, 2) + read_back.finish(1, 2)) == [2]
    finally:
        part.close()


def test_without_verify_nothing_is_read_back_nor_kept(tmp_path: pathlib.Path) -> None:
    chunk = 4096
    source = tmp_path / "data.bin"
    source.write_bytes(os.urandom(6 * chunk))
    manifest = build_manifest(source, chunk)
    data = source.read_bytes()
    part = PartFile(manifest, tmp_path / "out" / manifest.name)
    part.open()
    released: list[object] = []
    try:
        read_back = ReadBack(manifest, part.fd, 2 * chunk, part.direct_fd, release=released.append, verify=False)
        assert not read_back.keeps_data  # the writer gives each buffer back at once
        for index in range(6):
            piece = memoryview(data)[index * chunk : (index + 1) * chunk]
            verify_and_write(manifest, part.fd, index, piece)
            os.pwrite(part.fd, b"\xff", index * chunk)  # changed after its write: not looked at
            assert read_back.wrote(index, piece) == []
        assert read_back.finish() == []
        read_back.close()
        assert all(len(buffer) == 0 for buffer in released)  # type: ignore[arg-type]  # no chunk's bytes were held
    finally:
        part.close()


def test_a_large_file_is_hashed_in_slices_to_the_same_manifest(tmp_path: pathlib.Path, source: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_cache, "PARALLEL_HASH_BYTES", 4 * CHUNK)  # the source (10 chunks and a bit) is "large"
    done: list[int] = []
    manifest, _signature, cached = ManifestCache(tmp_path / "state").manifest_for(source, CHUNK, progress=done.append)
    assert not cached and manifest == build_manifest(source, CHUNK)
    assert sum(done) == source.stat().st_size and len(done) == manifest.chunk_count
    fd = os.open(source, os.O_RDONLY)
    try:
        assert hash_range(fd, manifest.size, CHUNK, 3, 11) == list(manifest.chunk_hashes[3:11])  # up to the short last chunk
        with pytest.raises(StorageError):
            hash_range(fd, manifest.size + CHUNK, CHUNK, 11, 12)  # the file is shorter than said
    finally:
        os.close(fd)


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK), reason="no writable tmpfs at /dev/shm")
def test_a_part_file_on_tmpfs_is_not_preallocated(tmp_path: pathlib.Path, source: pathlib.Path) -> None:
    # posix_fallocate on tmpfs zeroes every page up front (costs more than it saves); on a disk it reserves the blocks.
    manifest = build_manifest(source, CHUNK)
    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        fd = os.open(shm, os.O_RDONLY)
        try:
            assert memory_backed(fd)
        finally:
            os.close(fd)
        part = PartFile(manifest, pathlib.Path(shm) / "out.bin")
        part.open()
        try:
            assert os.fstat(part.fd).st_size == manifest.size and os.fstat(part.fd).st_blocks == 0  # sparse: nothing reserved
        finally:
            part.close()
