"""common/set_proof.py without I/O: a file's bytes checked against a proof and a kept root, fed whole, byte by byte and
in odd pieces; the proof's JSON and header forms; tampered bytes, entries, hashes and headers refused."""

from __future__ import annotations

import base64
import json
import os

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.collection import CollectionVersion, Entry, sign_version
from common.errors import IntegrityError, ValidationError
from common.identity import NodeKey
from common.manifest import ZERO_HASH, merkle_root, sha256
from common.set_proof import MAX_HEADER, FileCheck, FileProof, check_placement, decode_header, encode_header, make_proof, proof_at

KEY = NodeKey.generate()
CHUNK = 1024
FILES = {"a.txt": b"alpha", "b/big.bin": os.urandom(5 * CHUNK + 17), "b/empty": b"", "c/exact": os.urandom(2 * CHUNK)}


def _file_id(data: bytes) -> bytes:
    return merkle_root([sha256(data[at : at + CHUNK]) for at in range(0, len(data), CHUNK)])  # PROTOCOL.md §4.2


def _version() -> CollectionVersion:
    entries = [Entry(path, len(data), _file_id(data), 0o644, 0) for path, data in FILES.items()]
    entries.append(Entry("d/gone", 0, ZERO_HASH, 0o644, 0, deleted=True))
    return sign_version(KEY, "set", 1, bytes(32), entries, [KEY.public_key])


VERSION = _version()


def _feed(check: FileCheck, data: bytes, pieces: list[int]) -> Entry:
    at = 0
    for size in pieces:
        check.receive_data(data[at : at + size])
        at += size
    check.receive_data(data[at:])
    return check.finish()


@pytest.mark.parametrize("path", list(FILES))
def test_a_file_checks_whole_and_byte_by_byte(path: str) -> None:
    proof = make_proof(VERSION, path, CHUNK)
    data = FILES[path]
    assert _feed(FileCheck(proof, VERSION.root), data, []).path == path
    assert _feed(FileCheck(proof, VERSION.root), data, [1] * len(data)).path == path


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_any_split_of_the_bytes_checks(pieces: list[int]) -> None:
    proof = make_proof(VERSION, "b/big.bin", CHUNK)
    assert _feed(FileCheck(proof, VERSION.root), FILES["b/big.bin"], pieces).path == "b/big.bin"


def test_changed_short_and_long_files_are_refused() -> None:
    proof = make_proof(VERSION, "b/big.bin", CHUNK)
    data = FILES["b/big.bin"]
    for bad in (data[:-1] + bytes([data[-1] ^ 1]), data[:-1], data[: 3 * CHUNK], b"x" + data[1:]):
        with pytest.raises(IntegrityError, match="content differs"):
            _feed(FileCheck(proof, VERSION.root), bad, [700])
    check = FileCheck(proof, VERSION.root)
    with pytest.raises(IntegrityError, match="more than the"):  # refused as soon as it is too long, not at the end
        check.receive_data(data + b"!")


def test_a_proof_is_checked_against_the_kept_root_before_any_byte() -> None:
    proof = make_proof(VERSION, "a.txt", CHUNK)
    with pytest.raises(IntegrityError, match="does not place"):
        FileCheck(proof, bytes(32))
    other = proof_at(VERSION, 2, CHUNK)  # b/empty
    for forged in (attrs.evolve(proof, entry=attrs.evolve(proof.entry, size=0, file_id=other.entry.file_id)),  # another file's entry
                   attrs.evolve(proof, index=1), attrs.evolve(proof, count=9),
                   attrs.evolve(proof, proof=(bytes(32), *proof.proof[1:]))):  # fmt: skip
        with pytest.raises(IntegrityError, match="does not place"):
            check_placement(forged, VERSION.root)
    with pytest.raises(IntegrityError, match="is deleted"):
        check_placement(proof_at(VERSION, 4, CHUNK), VERSION.root)
    with pytest.raises(ValidationError, match="64 hexadecimal"):
        check_placement(proof, b"short")


def test_json_and_header_forms_round_trip_and_garbage_is_refused() -> None:
    proof = make_proof(VERSION, "c/exact", CHUNK)
    assert FileProof.from_json(proof.to_json()) == proof
    assert decode_header(encode_header(proof)) == proof
    assert encode_header(proof).isascii() and "\n" not in encode_header(proof)
    good = json.loads(proof.to_json())
    for key, value in (("index", -1), ("index", 7), ("count", 0), ("sequence", 0), ("chunk_size", 5), ("root", "ab"), ("proof", ["00"]),
                       ("collection", 3), ("entry", {"path": "../x"}), ("index", True)):  # fmt: skip
        with pytest.raises(ValidationError, match=r"proof|path|integer"):
            FileProof.from_json(json.dumps({**good, key: value}))
    for header in ("", "not base64!", base64.b64encode(b"{}").decode(), base64.b64encode(b"\xff").decode(), "A" * (MAX_HEADER + 1)):
        with pytest.raises(ValidationError):
            decode_header(header)
