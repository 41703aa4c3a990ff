"""Manifests: chunk hashing, the Merkle root that is a file's id, proofs and validation.

Expected values are computed here straight from hashlib and the padding rule in
``common/manifest.py`` (and PROTOCOL.md), never from the code under test.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tracemalloc

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import IntegrityError, ValidationError
from common.manifest import (
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MAX_NAME_BYTES,
    MIN_CHUNK_SIZE,
    TARGET_CHUNKS,
    Manifest,
    build_manifest,
    chunk_count_for,
    chunk_size_for,
    hash_file,
    merkle_proof,
    merkle_root,
    validate_name,
    verify_proof,
)

Z = bytes(32)  # the padding leaf


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(leaves: list[bytes]) -> bytes:
    """The documented rule, literally: pad the leaves to a power of two with zero hashes, hash pairs."""
    if not leaves:
        return H(b"")
    width = 1
    while width < len(leaves):
        width *= 2
    level = leaves + [Z] * (width - len(leaves))
    while len(level) > 1:
        level = [H(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


LEAVES = [H(bytes([i])) for i in range(64)]
a, b, c, d, e = LEAVES[:5]


# ---------------------------------------------------------------------------
# Merkle root: known answers
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("leaves", "expected"),
    [
        ([], H(b"")),
        ([a], a),
        ([a, b], H(a + b)),
        ([a, b, c], H(H(a + b) + H(c + Z))),
        ([a, b, c, d], H(H(a + b) + H(c + d))),
        ([a, b, c, d, e], H(H(H(a + b) + H(c + d)) + H(H(e + Z) + H(Z + Z)))),
    ],
    ids=["0 leaves", "1 leaf", "2 leaves", "3 leaves", "4 leaves", "5 leaves"],
)
def test_merkle_root_known_answers(leaves: list[bytes], expected: bytes) -> None:
    assert merkle_root(leaves) == expected


def test_merkle_root_pinned_hex() -> None:
    leaves = [H(b"a"), H(b"b"), H(b"c")]
    assert merkle_root(leaves).hex() == "d0a664079d491a97357efa1ce1eab5aeb566adef78a2b910e8d13e901e192832"
    assert merkle_root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("count", [*range(1, 18), 31, 32, 33, 64])
def test_merkle_root_matches_the_padding_rule(count: int) -> None:
    assert merkle_root(LEAVES[:count]) == reference_root(LEAVES[:count])


def test_root_depends_on_order_and_padding() -> None:
    assert merkle_root([a, b]) != merkle_root([b, a])
    # An explicit zero leaf pads to the same tree: the leaf count (the size) disambiguates.
    assert merkle_root([a, b, c]) == merkle_root([a, b, c, Z])
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, d])


# ---------------------------------------------------------------------------
# Proofs
# ---------------------------------------------------------------------------
def reference_proof(leaves: list[bytes], index: int) -> list[bytes]:
    width = 1
    while width < len(leaves):
        width *= 2
    level = leaves + [Z] * (width - len(leaves))
    proof = []
    while len(level) > 1:
        proof.append(level[index ^ 1])
        level = [H(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        index //= 2
    return proof


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 17])
def test_proofs_verify_for_every_index(count: int) -> None:
    leaves = LEAVES[:count]
    root = merkle_root(leaves)
    depth = (count - 1).bit_length()
    for index, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, index)
        assert list(proof) == reference_proof(leaves, index)
        assert len(proof) == depth
        assert verify_proof(leaf, index, count, proof, root)


@pytest.mark.parametrize("count", [2, 3, 5, 8, 17])
def test_tampered_proofs_fail(count: int) -> None:
    leaves = LEAVES[:count]
    root = merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        proof = merkle_proof(leaves, index)
        for other in range(-1, count + 1):
            if other != index:
                assert not verify_proof(leaf, other, count, proof, root), ("index", index, other)
        assert not verify_proof(LEAVES[count], index, count, proof, root)  # wrong leaf
        assert not verify_proof(leaf, index, count, proof, H(root))  # wrong root
        assert not verify_proof(leaf, index, count * 2, proof, root)  # a deeper tree
        assert not verify_proof(leaf, index, 0, proof, root)
        assert not verify_proof(leaf, index, count, proof[:-1], root)  # truncated proof
        assert not verify_proof(leaf, index, count, (*proof, Z), root)  # extended proof
        for level in range(len(proof)):
            flipped = bytes([proof[level][0] ^ 1]) + proof[level][1:]
            assert not verify_proof(leaf, index, count, (*proof[:level], flipped, *proof[level + 1 :]), root)


def test_single_leaf_proof_is_empty() -> None:
    assert merkle_proof([a], 0) == ()
    assert verify_proof(a, 0, 1, (), a)
    assert not verify_proof(b, 0, 1, (), a)


@pytest.mark.parametrize("index", [-1, 3])
def test_proof_index_out_of_range(index: int) -> None:
    with pytest.raises(ValidationError):
        merkle_proof([a, b, c], index)


@settings(max_examples=50, deadline=None)
@given(count=st.integers(1, 300), data=st.data())
def test_proofs_property(count: int, data: st.DataObject) -> None:
    leaves = LEAVES * 5
    leaves = [H(leaf + bytes([i % 256, i // 256])) for i, leaf in enumerate(leaves[:count])]
    root = merkle_root(leaves)
    assert root == reference_root(leaves)
    index = data.draw(st.integers(0, count - 1))
    assert verify_proof(leaves[index], index, count, merkle_proof(leaves, index), root)


# ---------------------------------------------------------------------------
# Hashing files
# ---------------------------------------------------------------------------
K = 1024


def manifest_of(tmp_path: pathlib.Path, content: bytes, chunk_size: int = K) -> Manifest:
    path = tmp_path / "file.bin"
    path.write_bytes(content)
    return build_manifest(path, chunk_size)


def test_empty_file(tmp_path: pathlib.Path) -> None:
    manifest = manifest_of(tmp_path, b"")
    assert (manifest.name, manifest.size, manifest.chunk_count, manifest.chunk_hashes) == ("file.bin", 0, 0, ())
    assert manifest.file_id == H(b"")
    manifest.verify()


def test_one_byte_file(tmp_path: pathlib.Path) -> None:
    manifest = manifest_of(tmp_path, b"x")
    assert manifest.chunk_hashes == (H(b"x"),)
    assert manifest.file_id == H(b"x")
    assert manifest.chunk_length(0) == 1
    manifest.verify_chunk(0, b"x")


def test_exact_multiple_and_one_more_byte(tmp_path: pathlib.Path) -> None:
    content = os.urandom(3 * K + 1)
    exact = manifest_of(tmp_path, content[: 3 * K])
    assert exact.chunk_hashes == tuple(H(content[i : i + K]) for i in range(0, 3 * K, K))
    assert [exact.chunk_length(i) for i in range(3)] == [K, K, K]
    assert exact.file_id == H(H(exact.chunk_hashes[0] + exact.chunk_hashes[1]) + H(exact.chunk_hashes[2] + Z))

    plus_one = manifest_of(tmp_path, content)
    assert plus_one.chunk_hashes == (*exact.chunk_hashes, H(content[-1:]))
    assert [plus_one.chunk_length(i) for i in range(4)] == [K, K, K, 1]
    assert [plus_one.chunk_offset(i) for i in range(4)] == [0, K, 2 * K, 3 * K]
    assert plus_one.file_id == reference_root(list(plus_one.chunk_hashes))
    for index in range(4):
        plus_one.verify_chunk(index, content[index * K : (index + 1) * K])


def test_name_and_progress(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(2500))
    seen: list[int] = []
    manifest = build_manifest(path, K, name="renamed", progress=seen.append)
    assert manifest.name == "renamed"
    assert seen == [K, K, 452]


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 0, True])
def test_hash_file_refuses_bad_chunk_sizes(tmp_path: pathlib.Path, chunk_size: int) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(ValidationError):
        hash_file(path, chunk_size)


def test_large_file_is_hashed_in_bounded_memory(tmp_path: pathlib.Path) -> None:
    chunk_size = K
    size = chunk_size * 1000 + 77 * K + 5  # more than 1000 chunks, a short last one
    path = tmp_path / "large.bin"
    content = os.urandom(size)
    path.write_bytes(content)
    expected = [H(content[i : i + chunk_size]) for i in range(0, size, chunk_size)]
    del content

    tracemalloc.start()
    try:
        got_size, hashes = hash_file(path, chunk_size)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (got_size, hashes) == (size, expected)
    # One chunk buffer plus ~1100 32-byte digests; a whole-file read would be > 1 MB.
    assert peak < size // 5

    manifest = build_manifest(path, chunk_size)
    assert manifest.chunk_count == 1078
    assert manifest.file_id == reference_root(expected)


# ---------------------------------------------------------------------------
# The chunk size every publisher uses (PROTOCOL.md §4.4): one id per content
# ---------------------------------------------------------------------------
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    ("size", "chunk_size"),
    [
        (0, KiB),
        (1, KiB),
        (8983, KiB),  # the demo's sample: 9 chunks, so its downloaders have something to trade
        (MiB, KiB),
        (MiB + 1, 2 * KiB),
        (GiB, MiB),  # what bench/swarm.py uses
        (GiB + 1, 2 * MiB),
        (16 * GiB, 16 * MiB),
        (16 * GiB + 1, 16 * MiB),  # the largest chunk size: more chunks from here on
        (MAX_CHUNKS * 16 * MiB, 16 * MiB),
    ],
)
def test_chunk_size_for_known_sizes(size: int, chunk_size: int) -> None:
    assert chunk_size_for(size) == chunk_size


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**40))
def test_chunk_size_for_is_monotonic_within_the_limits_and_aims_at_about_a_thousand_chunks(size: int, more: int) -> None:
    chunk_size = chunk_size_for(size)
    assert MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE and chunk_size & (chunk_size - 1) == 0  # a power of two
    assert chunk_size_for(size + more) >= chunk_size
    count = chunk_count_for(size, chunk_size)
    if chunk_size < MAX_CHUNK_SIZE:
        assert count <= TARGET_CHUNKS
    if chunk_size > MIN_CHUNK_SIZE:
        assert count > TARGET_CHUNKS // 2  # half the size would have been too small


def _quantity(text: str) -> int:
    """ "1 MiB + 1 byte" -> 1048577."""
    units = {"byte": 1, "bytes": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB}
    total = 0
    for term in text.replace(",", "").split("+"):
        number, *unit = term.split()
        total += int(number) * (units[unit[0]] if unit else 1)
    return total


def test_the_protocol_doc_table_is_chunk_size_for() -> None:
    text = (pathlib.Path(__file__).resolve().parent.parent / "common" / "PROTOCOL.md").read_text()
    section = text[text.index("### 4.4 ") : text.index("## 5. ")]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 5
    for size, chunk_size, chunks in rows:
        assert chunk_size_for(_quantity(size)) == _quantity(chunk_size), size
        assert chunk_count_for(_quantity(size), _quantity(chunk_size)) == _quantity(chunks), size


def test_chunk_size_for_refuses_a_negative_size() -> None:
    with pytest.raises(ValidationError):
        chunk_size_for(-1)


def test_build_manifest_uses_chunk_size_for_by_default(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(os.urandom(3 * MiB + 5))
    manifest = build_manifest(path)
    assert manifest.chunk_size == chunk_size_for(3 * MiB + 5) == 4 * KiB
    assert manifest == build_manifest(path, 4 * KiB)


# ---------------------------------------------------------------------------
# Manifest validation
# ---------------------------------------------------------------------------
GOOD = Manifest.from_hashes("file.bin", 2 * K + 1, K, [a, b, c])


def test_good_manifest() -> None:
    GOOD.verify()
    assert GOOD.file_id == H(H(a + b) + H(c + Z))
    assert GOOD.hex_id == GOOD.file_id.hex()
    assert GOOD.proof(2) == merkle_proof([a, b, c], 2)
    assert chunk_count_for(2 * K + 1, K) == 3 and chunk_count_for(0, K) == 0


@pytest.mark.parametrize(
    "changes",
    [
        {"size": 2 * K},  # needs 2 hashes
        {"size": 3 * K + 1},  # needs 4
        {"size": 0},
        {"chunk_hashes": (a, b)},
        {"chunk_hashes": (a, b, c, d)},
        {"chunk_hashes": (a, b, c[:31])},
        {"chunk_hashes": (a, b, "c" * 32)},
        {"file_id": GOOD.file_id[:31]},
        {"file_id": None},
        {"size": -1},
        {"size": 2**63},
        {"size": True},
        {"chunk_size": MIN_CHUNK_SIZE - 1},
        {"chunk_size": MAX_CHUNK_SIZE + 1},
    ],
    ids=repr,
)
def test_manifest_shape_is_checked(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        attrs.evolve(GOOD, **changes)


def test_too_many_chunks() -> None:
    with pytest.raises(ValidationError, match="chunks"):
        Manifest("f", (MAX_CHUNKS + 1) * K, K, (a,) * (MAX_CHUNKS + 1), Z)


BAD_NAMES = {
    "empty": "",
    "slash": "dir/file",
    "backslash": "dir\\file",
    "dot": ".",
    "dotdot": "..",
    "nul": "a\x00b",
    "newline": "a\nb",
    "tab": "a\tb",
    "escape": "\x1b[31mred",
    "delete": "a\x7f",
    "c1 control": "a\x85b",
    "line separator": "a\u2028b",
    "paragraph separator": "a\u2029b",
    "surrogate": "a\ud800b",
    "leading space": " a",
    "trailing space": "a ",
    "trailing newline": "a\n",
    "10 KB": "x" * 10_000,
    "256 bytes": "x" * 256,
    "256 UTF-8 bytes": "é" * 128,
    "not text": b"file",
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=list(BAD_NAMES))
def test_bad_names(name: str) -> None:
    with pytest.raises(ValidationError):
        validate_name(name)
    with pytest.raises(ValidationError):
        attrs.evolve(GOOD, name=name)


@pytest.mark.parametrize("name", ["a", "...", "a..b", ".hidden", "file name.txt", "ünïcødé 文件", "x" * MAX_NAME_BYTES])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name
    assert attrs.evolve(GOOD, name=name).name == name


# ---------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------
def test_verify_detects_a_wrong_id_or_hash() -> None:
    with pytest.raises(IntegrityError):
        attrs.evolve(GOOD, file_id=H(b"other")).verify()
    with pytest.raises(IntegrityError):
        attrs.evolve(GOOD, chunk_hashes=(a, c, b)).verify()
    with pytest.raises(IntegrityError):
        Manifest("empty", 0, K, (), Z).verify()


def test_verify_chunk() -> None:
    content = os.urandom(2 * K + 1)
    chunks = [content[:K], content[K : 2 * K], content[2 * K :]]
    manifest = Manifest.from_hashes("f", len(content), K, [H(chunk) for chunk in chunks])
    for index, chunk in enumerate(chunks):
        manifest.verify_chunk(index, chunk)
        manifest.verify_chunk(index, memoryview(bytearray(chunk)))
        with pytest.raises(IntegrityError, match="SHA-256"):
            manifest.verify_chunk(index, bytes([chunk[0] ^ 1]) + chunk[1:])
        with pytest.raises(IntegrityError, match="bytes"):
            manifest.verify_chunk(index, chunk + b"x")
        with pytest.raises(IntegrityError, match="bytes"):
            manifest.verify_chunk(index, chunk[:-1])
    with pytest.raises(IntegrityError):
        manifest.verify_chunk(0, chunks[1])  # right length, wrong chunk
    for index in (-1, 3):
        with pytest.raises(ValidationError):
            manifest.verify_chunk(index, b"x")
