"""Collections: a named, signed set of files, one version after another (PROTOCOL.md §8.11).

A version lists its entries (relative paths with subfolders, sizes, file ids,
modes, modification times, deletions and version vectors) sorted by path. Its
**root** is the Merkle root (:func:`common.manifest.merkle_root`) over the
entries' leaves (:func:`entry_leaf`) in path order, so an inclusion proof
(:func:`entry_proof`, :func:`verify_entry`) shows that one file belongs to one
version, given only the root a client kept.

Each version is signed by one of its owners (Ed25519 node keys,
:mod:`common.identity`) over :func:`signed_message`: the name, the sequence,
the parent (the root of the version it follows) and the owners. A version
follows another only as :func:`check_successor` says: a good signature by an
owner of the previous version, the next sequence, and the previous root as
parent. The tracker and peers apply the same rule.

Version vectors (:mod:`common.version_vector`, re-exported here) are tuples of (8-byte short node id, counter) pairs sorted by
node id: :func:`vv_bump`, :func:`vv_merge`, :func:`vv_compare`.

Pure: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Final

import attrs
import msgpack

from common.errors import NotAnOwner, NotASuccessor, ValidationError
from common.identity import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, NodeKey, verify_signature
from common.manifest import HASH_SIZE, ZERO_HASH, check_publishable_name, merkle_proof, merkle_root, sha256, verify_proof
from common.version_vector import SHORT_NODE_SIZE, VersionVector, check_vector, fixed_bytes, vv_bump, vv_compare, vv_merge

__all__ = [
    "SHORT_NODE_SIZE", "MAX_PATH_BYTES", "MAX_ENTRIES", "MAX_OWNERS", "MAX_VERSION_BYTES", "VersionVector", "Entry",
    "CollectionVersion", "check_path", "entry_leaf", "signed_message", "sign_version", "check_signature", "check_successor",
    "entry_proof", "entry_proofs", "verify_entry", "vv_bump", "vv_merge", "vv_compare", "encode_version", "decode_version",
]  # fmt: skip

MAX_PATH_BYTES: Final = 4096
MAX_ENTRIES: Final = 100_000
MAX_OWNERS: Final = 64
#: An encoded version fits a frame (16 MiB) with room for the frame's own fields.
MAX_VERSION_BYTES: Final = 16 * 1024 * 1024 - 4096
_INT_MAX: Final = (1 << 63) - 1
_INT_MIN: Final = -(1 << 63)
_ENTRY_TAG: Final = b"chunkswarm-entry\x00"
#: Entries by their msgpack (:func:`_decoded_entry`), at most _KNOWN_ENTRIES_MAX.
_KNOWN_ENTRIES: dict[bytes, Entry] = {}
_KNOWN_ENTRIES_MAX: Final = 1 << 17
_VERSION_TAG: Final = b"chunkswarm-collection-v1\x00"


def _integer(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int:  # bool is an int too: refused
        raise ValidationError(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValidationError(f"{what} must be in {low}..{high}, got {value}")
    return value


def check_path(path: object) -> str:
    """Check a relative POSIX path of an entry; return it. Never absolute, never '..', each segment a publishable name."""
    if type(path) is not str:
        raise ValidationError(f"an entry's path must be text, got {type(path).__name__}")
    return _check_text_path(path)


@functools.lru_cache(maxsize=1 << 16)  # each version lists every path again: one seen before costs a look-up, not ~30 us
def _check_text_path(path: str) -> str:
    if not path:
        raise ValidationError("an entry's path is empty")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise ValidationError(f"an entry's path is longer than {MAX_PATH_BYTES} bytes")
    if path.startswith("/"):
        raise ValidationError(f"an entry's path is relative, {path[:200]!r} is absolute")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValidationError(f"path {path[:200]!r} has an empty, '.' or '..' segment")
        try:
            check_publishable_name(segment)
        except ValidationError as exc:
            raise ValidationError(f"path {path[:200]!r}: {exc}") from None
    return path


def _check_entry(entry: Entry) -> None:
    check_path(entry.path)
    _integer(entry.size, "an entry's size", 0, _INT_MAX)
    fixed_bytes(entry.file_id, "an entry's file id", HASH_SIZE)
    _integer(entry.mode, "an entry's mode", 0, 0o7777)
    _integer(entry.mtime_ns, "an entry's mtime_ns", _INT_MIN, _INT_MAX)
    if type(entry.deleted) is not bool:
        raise ValidationError("an entry's deleted flag is a bool")
    if entry.deleted != (entry.file_id == ZERO_HASH):
        raise ValidationError(f"entry {entry.path[:200]!r}: a deleted entry, and only a deleted one, has the all-zero file id")
    check_vector(entry.version)
    if type(entry.modified_by) is not bytes or len(entry.modified_by) not in (0, SHORT_NODE_SIZE):
        raise ValidationError(f"an entry's modified_by is empty or {SHORT_NODE_SIZE} bytes")


@attrs.frozen
class Entry:
    """One file (or one deletion: ``deleted``, all-zero ``file_id``) of a collection version."""

    path: str
    size: int
    file_id: bytes
    mode: int
    mtime_ns: int
    deleted: bool = False
    version: VersionVector = ()
    modified_by: bytes = b""
    #: The msgpack of :meth:`to_fields` and the entry's leaf, computed once each: an entry unchanged from
    #: one version to the next (most of them) is neither packed nor hashed again (:func:`entry_leaf`).
    _packed: bytes | None = attrs.field(default=None, init=False, eq=False, repr=False)
    _leaf: bytes | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_entry(self)

    def to_fields(self) -> list[Any]:
        """The canonical field list (fixed order) that :func:`entry_leaf` hashes and the wire carries."""
        return [
            self.path,
            self.size,
            self.file_id,
            self.mode,
            self.mtime_ns,
            self.deleted,
            [[node, counter] for node, counter in self.version],
            self.modified_by,
        ]

    @classmethod
    def from_fields(cls, fields: object) -> Entry:
        if type(fields) is not tuple or len(fields) != 8:
            raise ValidationError("an entry is a list of 8 fields")
        path, size, file_id, mode, mtime_ns, deleted, vector, modified_by = fields
        return cls(path, size, file_id, mode, mtime_ns, deleted, vector, modified_by)  # validated there


def _packed(entry: Entry) -> bytes:
    packed = entry._packed
    if packed is None:
        packed = msgpack.packb(entry.to_fields(), use_bin_type=True)
        object.__setattr__(entry, "_packed", packed)
    return packed


def entry_leaf(entry: Entry) -> bytes:
    """The entry's Merkle leaf: SHA-256 over a domain tag and the msgpack of :meth:`Entry.to_fields`."""
    leaf = entry._leaf
    if leaf is None:
        leaf = sha256(_ENTRY_TAG + _packed(entry))
        object.__setattr__(entry, "_leaf", leaf)
    return leaf


def signed_message(name: str, sequence: int, parent: bytes, root: bytes, owners: Sequence[bytes]) -> bytes:
    """What an owner signs for a version: a domain tag, then name, sequence, parent, root and owners (msgpack)."""
    packed: bytes = msgpack.packb([name, sequence, parent, root, list(owners)], use_bin_type=True)
    return _VERSION_TAG + packed


def _check_version(version: CollectionVersion) -> None:
    try:
        check_publishable_name(version.name)
    except ValidationError as exc:
        raise ValidationError(f"collection name: {exc}") from None
    _integer(version.sequence, "a collection's sequence", 1, _INT_MAX)
    fixed_bytes(version.parent, "a collection's parent", HASH_SIZE)
    if version.sequence == 1 and version.parent != ZERO_HASH:
        raise ValidationError("the first version of a collection has the all-zero parent")
    if type(version.entries) is not tuple or len(version.entries) > MAX_ENTRIES:
        raise ValidationError(f"a collection version holds a tuple of at most {MAX_ENTRIES} entries")
    previous: str | None = None
    for entry in version.entries:
        if type(entry) is not Entry:
            raise ValidationError("a collection's entries are Entry values")
        if previous is not None and entry.path <= previous:
            raise ValidationError(f"entries are sorted by path, each path once: {entry.path[:200]!r} after {previous[:200]!r}")
        previous = entry.path
    if type(version.owners) is not tuple or not 1 <= len(version.owners) <= MAX_OWNERS:
        raise ValidationError(f"a collection has 1 to {MAX_OWNERS} owners")
    for owner in version.owners:
        fixed_bytes(owner, "an owner's public key", PUBLIC_KEY_SIZE)
    if len(set(version.owners)) != len(version.owners):
        raise ValidationError("a collection names each owner once")
    fixed_bytes(version.signer, "a collection's signer", PUBLIC_KEY_SIZE)
    fixed_bytes(version.signature, "a collection's signature", SIGNATURE_SIZE)


@attrs.frozen
class CollectionVersion:
    """One signed version of a named collection. ``root`` (and ``leaves``) are computed once, at construction."""

    name: str
    sequence: int
    parent: bytes
    entries: tuple[Entry, ...]
    owners: tuple[bytes, ...]
    signer: bytes
    signature: bytes
    leaves: tuple[bytes, ...] = attrs.field(init=False, eq=False, repr=False)
    root: bytes = attrs.field(init=False, eq=False)
    #: :func:`encode_version`'s bytes (or those it was decoded from), once: a tracker stores a version and
    #: sends it to every watcher, a node sends it and keeps it on disk.
    _encoded: bytes | None = attrs.field(default=None, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        _check_version(self)
        leaves = tuple(entry_leaf(entry) for entry in self.entries)
        object.__setattr__(self, "leaves", leaves)
        object.__setattr__(self, "root", merkle_root(leaves))

    def entry(self, path: str) -> tuple[int, Entry] | None:
        """The index and entry at ``path``, or None."""
        low, high = 0, len(self.entries)
        while low < high:  # entries are sorted by path
            middle = (low + high) // 2
            if self.entries[middle].path < path:
                low = middle + 1
            else:
                high = middle
        if low < len(self.entries) and self.entries[low].path == path:
            return low, self.entries[low]
        return None


def sign_version(key: NodeKey, name: str, sequence: int, parent: bytes, entries: Iterable[Entry], owners: Sequence[bytes]) -> CollectionVersion:
    """A version signed by ``key``; the entries are sorted by path here."""
    ordered = tuple(sorted(entries, key=lambda entry: entry.path))
    owners = tuple(owners)
    version = CollectionVersion(name, sequence, parent, ordered, owners, key.public_key, bytes(SIGNATURE_SIZE))
    # Not attrs.evolve, which would check the entries and hash the leaves again: the signature is in neither.
    object.__setattr__(version, "signature", key.sign(signed_message(name, sequence, parent, version.root, owners)))
    for entry in ordered:  # this version, back from the tracker (the signer's own watch), is decoded without building them again
        _remember(_packed(entry), entry)
    return version


def check_signature(version: CollectionVersion) -> None:
    """Raise :class:`NotAnOwner` unless the version's signature is its signer's over :func:`signed_message`."""
    message = signed_message(version.name, version.sequence, version.parent, version.root, version.owners)
    try:
        verify_signature(version.signer, version.signature, message)
    except ValidationError:
        raise NotAnOwner(f"collection {version.name!r} version {version.sequence}: the signature does not verify") from None


def check_successor(previous: CollectionVersion | None, new: CollectionVersion) -> None:
    """Raise unless ``new`` may follow ``previous`` (None: ``new`` starts the collection).

    :class:`NotAnOwner` for a bad signature or a signer who is not an owner of
    ``previous`` (of ``new`` itself for a first version); :class:`NotASuccessor`
    for another name, a sequence other than the next, or a parent other than
    ``previous.root``.
    """
    check_signature(new)
    owners = new.owners if previous is None else previous.owners
    if new.signer not in owners:
        raise NotAnOwner(f"collection {new.name!r}: version {new.sequence} is signed by a key that is not an owner")
    if previous is None:
        if new.sequence != 1 or new.parent != ZERO_HASH:
            raise NotASuccessor(f"collection {new.name!r} is new: its first version has sequence 1, not {new.sequence}")
        return
    if new.name != previous.name:
        raise NotASuccessor(f"version of {new.name!r} cannot follow a version of {previous.name!r}")
    if new.sequence != previous.sequence + 1 or new.parent != previous.root:
        raise NotASuccessor(f"collection {new.name!r}: version {new.sequence} does not follow the current version {previous.sequence}")


# ---------------------------------------------------------------------------
# Inclusion proofs
# ---------------------------------------------------------------------------
def entry_proof(version: CollectionVersion, index: int) -> tuple[bytes, ...]:
    """The inclusion proof of entry ``index`` in ``version`` (sibling hashes, lowest first)."""
    return merkle_proof(version.leaves, index)


def entry_proofs(version: CollectionVersion) -> tuple[tuple[bytes, ...], ...]:
    """Every entry's inclusion proof, in one pass over the tree (``entry_proof`` per entry is quadratic)."""
    leaves = list(version.leaves)
    if len(leaves) <= 1:
        return tuple(() for _ in leaves)
    levels = [leaves]
    zero = ZERO_HASH
    zeros = [zero]
    while len(levels[-1]) > 1:
        nodes = levels[-1]
        if len(nodes) % 2:
            nodes = [*nodes, zero]
        levels.append([sha256(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)])
        zero = sha256(zero + zero)
        zeros.append(zero)
    proofs = []
    for index in range(len(leaves)):
        proof = []
        position = index
        for depth, nodes in enumerate(levels[:-1]):
            sibling = position ^ 1
            proof.append(nodes[sibling] if sibling < len(nodes) else zeros[depth])
            position //= 2
        proofs.append(tuple(proof))
    return tuple(proofs)


def verify_entry(entry: Entry, index: int, count: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``entry`` is entry ``index`` of a ``count``-entry version whose root is ``root``."""
    return verify_proof(entry_leaf(entry), index, count, proof, root)


# ---------------------------------------------------------------------------
# Encoding (wire and storage)
# ---------------------------------------------------------------------------
def _array_header(count: int) -> bytes:
    """msgpack's array header for ``count`` items, the smallest form (as ``msgpack.packb`` writes it)."""
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def encode_version(version: CollectionVersion) -> bytes:
    """The version as msgpack: [name, sequence, parent, [entry fields ...], [owners], signer, signature].

    Built from each entry's packed fields (packed once per entry, see :class:`Entry`): the same bytes as
    packing the whole list at once.
    """
    if version._encoded is not None:
        return version._encoded

    def pack(value: Any) -> bytes:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed

    data = b"".join(
        [
            _array_header(7),
            pack(version.name),
            pack(version.sequence),
            pack(version.parent),
            _array_header(len(version.entries)),
            *[_packed(entry) for entry in version.entries],
            pack(list(version.owners)),
            pack(version.signer),
            pack(version.signature),
        ]
    )
    if len(data) > MAX_VERSION_BYTES:
        raise ValidationError(f"collection {version.name!r} encodes to {len(data)} bytes, more than {MAX_VERSION_BYTES}")
    object.__setattr__(version, "_encoded", data)
    return data


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValidationError("a collection version holds no msgpack extension types")


def _unpack(data: bytes, *, max_array_len: int) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=True, ext_hook=_refuse_ext, max_array_len=max_array_len)


def _decoded_entry(packed: bytes) -> Entry:
    """The entry whose msgpack is ``packed``, validated once: the next versions list most entries again, byte for byte,
    and a node's own entries come back in the versions it signed (:func:`sign_version` remembers them)."""
    entry = _KNOWN_ENTRIES.get(packed)
    if entry is None:
        entry = Entry.from_fields(_unpack(packed, max_array_len=MAX_ENTRIES))
        _remember(packed, entry)
    return entry


def _remember(packed: bytes, entry: Entry) -> None:
    if len(_KNOWN_ENTRIES) >= _KNOWN_ENTRIES_MAX:
        # Emptied at once, not one at a time: versions are decoded in worker threads too, and a clear is one atomic step.
        _KNOWN_ENTRIES.clear()
    _KNOWN_ENTRIES[packed] = entry


def decode_version(data: bytes) -> CollectionVersion:
    """The version ``data`` encodes, every field validated; :class:`ValidationError` for anything else.

    The signature is not checked here: :func:`check_successor` does, against the version it follows.
    Each entry is looked up by its bytes first (:func:`_decoded_entry`): one already seen, in this or an
    earlier version, is the same validated :class:`Entry` (its leaf hashed already).
    """
    if len(data) > MAX_VERSION_BYTES:
        raise ValidationError(f"an encoded collection version is at most {MAX_VERSION_BYTES} bytes, got {len(data)}")
    unpacker = msgpack.Unpacker(None, raw=False, use_list=False, strict_map_key=True, ext_hook=_refuse_ext, max_array_len=MAX_ENTRIES,
                                max_buffer_size=max(len(data), 1))  # fmt: skip
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() != 7:
            raise ValidationError("an encoded collection version is a list of 7 fields")
        name, sequence, parent = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
        entries = []
        for _ in range(unpacker.read_array_header()):
            start = unpacker.tell()
            unpacker.skip()
            entries.append(_decoded_entry(data[start : unpacker.tell()]))
        owners, signer, signature = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
        if unpacker.tell() != len(data):
            raise ValidationError(f"an encoded collection version has {len(data) - unpacker.tell()} bytes after its end")
    except ValidationError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValidationError(f"not an encoded collection version: {exc}") from None
    if type(owners) is not tuple:
        raise ValidationError("a collection version's entries and owners are lists")
    version = CollectionVersion(name, sequence, parent, tuple(entries), owners, signer, signature)
    object.__setattr__(version, "_encoded", data)
    return version
