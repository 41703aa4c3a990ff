"""That one file belongs to one version of a collection: the proof a client keeps, and a sans-I/O check of a file against it.

:class:`FileProof` names one entry of one version (collection, sequence, root,
the entry's index among the version's ``count`` entries, the entry itself, the
inclusion proof of PROTOCOL.md §8.11 and the chunk size the file id was
computed with). It travels as JSON (``chunkswarm collection proof`` writes it,
the gateway's ``GET /api/v1/sets/{set}/files/{index}/proof`` answers it) or, in
one HTTP header, as the base64 of that JSON (:func:`encode_header`).

:class:`FileCheck` checks a file's bytes as they arrive, without I/O: the proof
is checked against the root the *client* kept when the check is made (before a
byte of the file is trusted), each chunk is hashed as it fills, and
:meth:`FileCheck.finish` compares the size and the file id (PROTOCOL.md §4.2)
with the entry's. Anything else raises :class:`~common.errors.IntegrityError`
saying which check failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any, Final

import attrs

from common.collection import CollectionVersion, Entry, entry_proof, verify_entry
from common.errors import IntegrityError, ValidationError
from common.manifest import HASH_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, merkle_root

__all__ = ["FileProof", "make_proof", "check_placement", "FileCheck", "encode_header", "decode_header", "MAX_HEADER"]

#: A proof header longer than this is refused: a 4 KiB path escaped in JSON, 17 hashes and base64 stay well below it.
MAX_HEADER: Final = 64 * 1024


def _int(value: object, what: str, low: int) -> int:
    if type(value) is not int or value < low:
        raise ValidationError(f"{what} must be an integer of at least {low}, got {value!r}")
    return value


@attrs.frozen
class FileProof:
    """That one file belongs to one version of a collection: its entry, position, the proof, and its chunk size."""

    collection: str
    sequence: int
    root: bytes
    index: int
    count: int
    entry: Entry
    proof: tuple[bytes, ...]
    chunk_size: int

    def to_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "collection": self.collection, "sequence": self.sequence, "root": self.root.hex(), "index": self.index,
            "count": self.count, "chunk_size": self.chunk_size, "proof": [p.hex() for p in self.proof],
            "entry": {"path": e.path, "size": e.size, "file_id": e.file_id.hex(), "mode": e.mode, "mtime_ns": e.mtime_ns,
                      "deleted": e.deleted, "version": [[n.hex(), c] for n, c in e.version], "modified_by": e.modified_by.hex()},
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Any) -> FileProof:
        try:
            e = data["entry"]
            entry = Entry(e["path"], e["size"], bytes.fromhex(e["file_id"]), e["mode"], e["mtime_ns"], e["deleted"],
                          tuple((bytes.fromhex(n), c) for n, c in e["version"]), bytes.fromhex(e["modified_by"]))  # fmt: skip
            proof = tuple(bytes.fromhex(p) for p in data["proof"])
            root = bytes.fromhex(data["root"])
            collection, sequence, index, count, chunk_size = (data[k] for k in ("collection", "sequence", "index", "count", "chunk_size"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValidationError(f"not a collection proof: {exc}") from None
        if type(collection) is not str or len(root) != HASH_SIZE or any(len(p) != HASH_SIZE for p in proof):
            raise ValidationError(f"not a collection proof: a collection name, a root and proof hashes of {HASH_SIZE} bytes")
        _int(sequence, "a proof's sequence", 1)
        _int(index, "a proof's index", 0)
        _int(count, "a proof's entry count", index + 1)
        if type(chunk_size) is not int or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValidationError(f"a proof's chunk size is in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}, got {chunk_size!r}")
        return cls(collection, sequence, root, index, count, entry, proof, chunk_size)

    @classmethod
    def from_json(cls, text: str) -> FileProof:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"not a collection proof: {exc}") from None
        return cls.from_dict(data)


def make_proof(version: CollectionVersion, path: str, chunk_size: int) -> FileProof:
    """The proof that the file at ``path`` belongs to ``version`` (``chunk_size``: its manifest's)."""
    found = version.entry(path)
    if found is None:
        raise ValidationError(f"collection {version.name!r} version {version.sequence} has no {path!r}")
    return proof_at(version, found[0], chunk_size)


def proof_at(version: CollectionVersion, index: int, chunk_size: int) -> FileProof:
    """The proof of entry ``index`` of ``version``."""
    return FileProof(version.name, version.sequence, version.root, index, len(version.entries), version.entries[index],
                     entry_proof(version, index), chunk_size)  # fmt: skip


def encode_header(proof: FileProof) -> str:
    """The proof as one HTTP header value: the base64 (RFC 4648 §4, with padding) of its compact JSON."""
    return base64.b64encode(json.dumps(proof.to_dict(), separators=(",", ":")).encode()).decode("ascii")


def decode_header(value: str) -> FileProof:
    """The proof :func:`encode_header` made; :class:`ValidationError` for anything else."""
    if len(value) > MAX_HEADER:
        raise ValidationError(f"a proof header is at most {MAX_HEADER} characters, got {len(value)}")
    try:
        text = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"not a proof header (base64 of the proof's JSON): {exc}") from None
    return FileProof.from_json(text)


def check_placement(proof: FileProof, root: bytes) -> Entry:
    """The proof's entry, once it is shown to belong to the version whose root is ``root`` (the one the client kept)."""
    if len(root) != HASH_SIZE:
        raise ValidationError(f"a root is {HASH_SIZE} bytes (64 hexadecimal digits)")
    if not verify_entry(proof.entry, proof.index, proof.count, proof.proof, root):
        raise IntegrityError(f"the proof does not place {proof.entry.path!r} in the version with root {root.hex()}")
    if proof.entry.deleted:
        raise IntegrityError(f"{proof.entry.path!r} is deleted in that version")
    return proof.entry


@attrs.define(eq=False)
class FileCheck:
    """Bytes in (:meth:`receive_data`), a verdict out (:meth:`finish`): is this the file ``proof`` places under ``root``?

    The placement is checked at construction, so a proof that does not match
    the root is refused before a byte of the file is read. Memory: one chunk.
    """

    proof: FileProof
    root: bytes
    entry: Entry = attrs.field(init=False)
    size: int = attrs.field(init=False, default=0)
    _hashes: list[bytes] = attrs.field(init=False, factory=list)
    _pending: bytearray = attrs.field(init=False, factory=bytearray)

    def __attrs_post_init__(self) -> None:
        self.entry = check_placement(self.proof, self.root)

    def receive_data(self, data: bytes) -> None:
        """The next bytes of the file; IntegrityError as soon as there are more than the entry's size."""
        self.size += len(data)
        if self.size > self.entry.size:
            raise IntegrityError(f"more than the {self.entry.size} bytes of {self.entry.path!r} (its content differs)")
        pending, chunk = self._pending, self.proof.chunk_size
        pending += data
        if len(pending) >= chunk:
            whole = len(pending) - len(pending) % chunk
            view = memoryview(pending)
            self._hashes += [hashlib.sha256(view[at : at + chunk]).digest() for at in range(0, whole, chunk)]
            view.release()
            del pending[:whole]

    def finish(self) -> Entry:
        """The entry, if the bytes received are its file; IntegrityError saying what differs otherwise."""
        if self._pending:
            self._hashes.append(hashlib.sha256(self._pending).digest())
            self._pending.clear()
        entry = self.entry
        if self.size != entry.size:
            raise IntegrityError(f"{self.size} bytes, where {entry.path!r} of that version has {entry.size}: its content differs")
        if merkle_root(self._hashes) != entry.file_id:
            raise IntegrityError(f"the bytes received are not {entry.path!r} of that version (its content differs)")
        return entry
