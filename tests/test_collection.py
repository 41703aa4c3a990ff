"""The collection model (common/collection.py): entries, roots, proofs, signatures, successors, version vectors, encoding."""

from __future__ import annotations

import hashlib

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.collection import (
    MAX_ENTRIES,
    CollectionVersion,
    Entry,
    check_successor,
    decode_version,
    encode_version,
    entry_leaf,
    entry_proof,
    entry_proofs,
    sign_version,
    signed_message,
    verify_entry,
    vv_bump,
    vv_compare,
    vv_merge,
)
from common.errors import NotAnOwner, NotASuccessor, ValidationError
from common.identity import NodeKey
from common.manifest import merkle_root

ZERO = bytes(32)
ALICE = NodeKey.generate()
BOB = NodeKey.generate()
MALLORY = NodeKey.generate()


def H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def entry(path: str, content: bytes = b"x", **changes: object) -> Entry:
    base = Entry(path, len(content), H(content), 0o644, 1_700_000_000_000_000_000)
    return attrs.evolve(base, **changes)


def first(key: NodeKey = ALICE, entries: tuple[Entry, ...] = (), owners: tuple[bytes, ...] | None = None) -> CollectionVersion:
    return sign_version(key, "photos", 1, ZERO, entries or (entry("a.txt"), entry("dir/b.txt", b"b")), owners or (key.public_key,))


# ---------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["", "/etc/passwd", "a/../b", "../x", "./x", "a//b", "a/", "a\x00b", "a\nb", "a\\b", "a/\u202eevil", " a", "x" * 4097],
)
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(ValidationError):
        entry(path)


@pytest.mark.parametrize("path", ["a", "a/b/c.txt", "Ünïcode/ファイル", "dots.in.name/..x", "a b/c"])
def test_good_paths(path: str) -> None:
    assert entry(path).path == path


@pytest.mark.parametrize(
    "changes",
    [
        {"size": -1},
        {"file_id": b"short"},
        {"mode": 0o10000},
        {"mode": True},
        {"mtime_ns": 1 << 63},
        {"deleted": True},  # a deleted entry has the zero id
        {"file_id": ZERO},  # only a deleted one
        {"version": ((b"12345678", 0),)},
        {"version": ((b"short", 1),)},
        {"version": ((b"bbbbbbbb", 1), (b"aaaaaaaa", 1))},
        {"version": ((b"aaaaaaaa", 1), (b"aaaaaaaa", 2))},
        {"modified_by": b"123"},
    ],
)
def test_bad_entry_fields_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        entry("a", **changes)


def test_a_deletion() -> None:
    gone = Entry("a", 0, ZERO, 0, 0, deleted=True, version=((b"aaaaaaaa", 2),), modified_by=b"aaaaaaaa")
    assert gone.deleted


def test_leaf_covers_every_field() -> None:
    base = entry("a", version=((b"aaaaaaaa", 1),), modified_by=b"aaaaaaaa")
    variants = [
        attrs.evolve(base, path="b"),
        attrs.evolve(base, size=2),
        attrs.evolve(base, file_id=H(b"y")),
        attrs.evolve(base, mode=0o600),
        attrs.evolve(base, mtime_ns=1),
        attrs.evolve(base, deleted=True, file_id=ZERO),
        attrs.evolve(base, version=((b"aaaaaaaa", 2),)),
        attrs.evolve(base, modified_by=b"bbbbbbbb"),
    ]
    leaves = {entry_leaf(v) for v in [base, *variants]}
    assert len(leaves) == len(variants) + 1
    fields = [base.path, base.size, base.file_id, base.mode, base.mtime_ns, False, [[b"aaaaaaaa", 1]], b"aaaaaaaa"]
    assert entry_leaf(base) == H(b"chunkswarm-entry\x00" + msgpack.packb(fields, use_bin_type=True))


# ---------------------------------------------------------------------------
# Versions, roots, proofs
# ---------------------------------------------------------------------------
def test_root_is_the_merkle_root_of_leaves_in_path_order() -> None:
    entries = (entry("z"), entry("a/b"), entry("m"))
    version = first(entries=entries)
    assert [e.path for e in version.entries] == ["a/b", "m", "z"]
    assert version.root == merkle_root([entry_leaf(e) for e in sorted(entries, key=lambda e: e.path)])


def test_duplicate_or_unsorted_paths_are_refused() -> None:
    with pytest.raises(ValidationError, match="sorted by path"):
        first(entries=(entry("a"), entry("a", b"other")))
    good = first()
    with pytest.raises(ValidationError, match="sorted by path"):
        attrs.evolve(good, entries=tuple(reversed(good.entries)))


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "a/b"},
        {"name": ""},
        {"sequence": 0},
        {"parent": H(b"p")},  # sequence 1 has the zero parent
        {"owners": ()},
        {"owners": (ALICE.public_key, ALICE.public_key)},
        {"owners": tuple(NodeKey.generate().public_key for _ in range(65))},
        {"signer": b"x" * 31},
        {"signature": b"x" * 63},
    ],
)
def test_bad_version_fields_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        attrs.evolve(first(), **changes)


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_every_entry_has_a_proof_that_verifies(count: int) -> None:
    version = first(entries=tuple(entry(f"f{i:02}", bytes([i])) for i in range(count)))
    proofs = entry_proofs(version)
    for index, item in enumerate(version.entries):
        assert proofs[index] == entry_proof(version, index)
        assert verify_entry(item, index, count, proofs[index], version.root)
        assert not verify_entry(attrs.evolve(item, size=item.size + 1), index, count, proofs[index], version.root)
        assert not verify_entry(item, index, count, proofs[index], H(b"another root"))
        if count > 1:
            assert not verify_entry(item, (index + 1) % count, count, proofs[index], version.root)
            tampered = (H(b"t"), *proofs[index][1:])
            assert not verify_entry(item, index, count, tampered, version.root)


# ---------------------------------------------------------------------------
# Signatures and successors
# ---------------------------------------------------------------------------
def test_signature_covers_the_signed_message() -> None:
    version = first()
    check_successor(None, version)
    message = signed_message(version.name, version.sequence, version.parent, version.root, version.owners)
    assert message.startswith(b"chunkswarm-collection-v1\x00")
    ALICE.private.public_key().verify(version.signature, message)


def test_a_tampered_version_is_refused() -> None:
    version = first()
    forged = attrs.evolve(version, entries=(*version.entries, entry("zz")))  # the signature covers the old root
    with pytest.raises(NotAnOwner, match="signature"):
        check_successor(None, forged)
    with pytest.raises(NotAnOwner):
        check_successor(None, attrs.evolve(version, owners=(ALICE.public_key, MALLORY.public_key)))


def test_first_version_signed_by_someone_not_among_its_owners_is_refused() -> None:
    with pytest.raises(NotAnOwner, match="not an owner"):
        check_successor(None, first(key=MALLORY, owners=(ALICE.public_key,)))


def test_successor_rules() -> None:
    v1 = first()
    v2 = sign_version(ALICE, "photos", 2, v1.root, (*v1.entries, entry("new")), (ALICE.public_key, BOB.public_key))
    check_successor(v1, v2)
    # bob was added by v2, so he signs v3; he was not an owner of v1, so cannot sign a successor of v1
    v3 = sign_version(BOB, "photos", 3, v2.root, (entry("c"),), v2.owners)
    check_successor(v2, v3)
    with pytest.raises(NotAnOwner):
        check_successor(v1, sign_version(BOB, "photos", 2, v1.root, (), v1.owners))
    with pytest.raises(NotAnOwner):
        check_successor(v2, sign_version(MALLORY, "photos", 3, v2.root, (), (MALLORY.public_key,)))
    with pytest.raises(NotASuccessor, match="does not follow"):
        check_successor(v2, sign_version(ALICE, "photos", 3, v1.root, (), v2.owners))  # stale parent
    with pytest.raises(NotASuccessor, match="does not follow"):
        check_successor(v2, sign_version(ALICE, "photos", 2, v1.root, (), v2.owners))  # a sibling of v2
    with pytest.raises(NotASuccessor, match="does not follow"):
        check_successor(v1, sign_version(ALICE, "photos", 3, v1.root, (), v1.owners))  # skipped sequence
    with pytest.raises(NotASuccessor):
        check_successor(v1, sign_version(ALICE, "other", 2, v1.root, (), v1.owners))
    with pytest.raises(NotASuccessor):
        check_successor(None, v2)


# ---------------------------------------------------------------------------
# Version vectors
# ---------------------------------------------------------------------------
A, B, C = b"aaaaaaaa", b"bbbbbbbb", b"cccccccc"


def test_vv_examples() -> None:
    assert vv_bump((), A) == ((A, 1),)
    assert vv_bump(((B, 2),), A) == ((A, 1), (B, 2))
    assert vv_merge(((A, 3), (B, 1)), ((B, 4), (C, 1))) == ((A, 3), (B, 4), (C, 1))
    assert vv_compare((), ()) == "equal"
    assert vv_compare(((A, 1),), ((A, 2),)) == "before"
    assert vv_compare(((A, 2),), ((A, 1),)) == "after"
    assert vv_compare(((A, 1),), ((B, 1),)) == "concurrent"
    assert vv_compare(((A, 1),), ((A, 1), (B, 1))) == "before"


vectors = st.dictionaries(st.sampled_from([A, B, C]), st.integers(1, 5)).map(lambda d: tuple(sorted(d.items())))


@given(vectors, vectors, st.sampled_from([A, B, C]))
def test_vv_properties(a: tuple[tuple[bytes, int], ...], b: tuple[tuple[bytes, int], ...], node: bytes) -> None:
    flipped = {"before": "after", "after": "before", "equal": "equal", "concurrent": "concurrent"}
    assert vv_compare(b, a) == flipped[vv_compare(a, b)]
    assert vv_compare(a, vv_bump(a, node)) == "before"
    merged = vv_merge(a, b)
    assert vv_compare(a, merged) in ("before", "equal") and vv_compare(b, merged) in ("before", "equal")
    assert merged == vv_merge(b, a)
    assert (vv_compare(a, b) == "equal") == (a == b)


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------
segments = st.text(st.characters(categories=("L", "N"), include_characters="-_. "), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s not in (".", "..")
)
paths = st.lists(segments, min_size=1, max_size=4).map("/".join)
entries = st.builds(
    lambda path, size, content, mode, mtime, deleted, vv, by: Entry(
        path, 0 if deleted else size, ZERO if deleted else H(content), mode, mtime, deleted, vv, by
    ),
    paths,
    st.integers(0, (1 << 63) - 1),
    st.binary(max_size=4),
    st.integers(0, 0o7777),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.booleans(),
    vectors,
    st.sampled_from([b"", A]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(entries, max_size=12, unique_by=lambda e: e.path), st.integers(1, 1000))
def test_encode_decode_round_trip(items: list[Entry], sequence: int) -> None:
    parent = ZERO if sequence == 1 else H(b"parent")
    version = sign_version(ALICE, "set", sequence, parent, items, (ALICE.public_key, BOB.public_key))
    decoded = decode_version(encode_version(version))
    assert decoded == version
    assert decoded.root == version.root
    assert encode_version(decoded) == encode_version(version)


def test_a_version_decoded_reuses_the_entries_this_node_encoded() -> None:
    # A node's own version comes back from the tracker (its watch): its entries are not built and checked again.
    mine = tuple(entry(f"dir/mine-{i}.txt", bytes([i])) for i in range(5))
    version = sign_version(ALICE, "set", 1, ZERO, mine, (ALICE.public_key,))
    decoded = decode_version(encode_version(version))
    assert decoded == version and all(a is b for a, b in zip(decoded.entries, mine, strict=True))


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_garbage_never_decodes_to_anything_but_a_validation_error(data: bytes) -> None:
    try:
        decode_version(data)
    except ValidationError:
        pass


def test_decode_refuses_each_kind_of_malformation() -> None:
    good = msgpack.unpackb(encode_version(first()), raw=False)
    for index, bad in [(0, "a/b"), (1, 0), (1, True), (2, b"x"), (3, "no"), (4, []), (5, b"x"), (6, b"y")]:
        fields = list(good)
        fields[index] = bad
        with pytest.raises(ValidationError):
            decode_version(msgpack.packb(fields, use_bin_type=True))
    with pytest.raises(ValidationError):
        decode_version(msgpack.packb(good[:6], use_bin_type=True))
    entry_fields = list(good[3][0])
    entry_fields[0] = "../escape"
    with pytest.raises(ValidationError):
        decode_version(msgpack.packb([*good[:3], [entry_fields], *good[4:]], use_bin_type=True))
    too_many = [good[3][0]] * (MAX_ENTRIES + 1)
    with pytest.raises(ValidationError):
        decode_version(msgpack.packb([*good[:3], too_many, *good[4:]], use_bin_type=True))
    with pytest.raises(ValidationError):
        decode_version(encode_version(first()) + b"\x00")  # trailing bytes


@pytest.mark.parametrize("count", [0, 15, 16, 300])
def test_encoding_is_the_msgpack_of_the_field_list(count: int) -> None:
    # Built from each entry's packed fields, it must stay byte for byte what packing the whole list gives.
    version = sign_version(ALICE, "photos", 1, ZERO, [entry(f"f{i:04d}") for i in range(count)], (ALICE.public_key,))
    expected = msgpack.packb(
        [version.name, version.sequence, version.parent, [e.to_fields() for e in version.entries], list(version.owners), version.signer,
         version.signature],
        use_bin_type=True,
    )  # fmt: skip
    assert encode_version(version) == expected
    assert [entry_leaf(e) for e in version.entries] == [H(b"chunkswarm-entry\x00" + msgpack.packb(e.to_fields(), use_bin_type=True))
                                                         for e in version.entries]  # fmt: skip


def test_entries_listed_again_are_decoded_once() -> None:
    # The next version lists most entries of the last one byte for byte: the same validated Entry, its leaf hashed already.
    one = first(entries=(entry("a.txt"), entry("b.txt")))
    two = sign_version(ALICE, "photos", 2, one.root, (entry("a.txt"), entry("b.txt", b"new")), (ALICE.public_key,))
    decoded_one, decoded_two = decode_version(encode_version(one)), decode_version(encode_version(two))
    assert decoded_one.entries[0] is decoded_two.entries[0]
    assert decoded_one.entries[1] is not decoded_two.entries[1] and decoded_two.entries[1] == two.entries[1]
    assert decoded_two.root == two.root
    data = encode_version(two)
    assert encode_version(decode_version(data)) is data  # what was received is sent on (a tracker to its watchers) as it came


def test_decoding_refuses_trailing_bytes_and_a_bad_entry_seen_again() -> None:
    data = encode_version(first())
    with pytest.raises(ValidationError):
        decode_version(data + b"\x00")
    good = msgpack.unpackb(data, raw=False)
    bad = [*good[:3], [[*good[3][0][:5], 1, *good[3][0][6:]]], *good[4:]]  # deleted as 1, not False
    for _ in range(2):  # a refusal is not remembered as an entry
        with pytest.raises(ValidationError):
            decode_version(msgpack.packb(bad, use_bin_type=True))
