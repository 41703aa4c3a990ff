"""File manifests: chunking, SHA-256 per chunk, and the Merkle root that is a file's id.

Merkle tree (in the manner of BitTorrent v2, BEP 52):

* leaf ``i`` is ``SHA-256(chunk i)``; a file of ``size`` bytes has
  ``ceil(size / chunk_size)`` chunks, the last one possibly short;
* the leaf count is padded up to the next power of two with 32 zero bytes
  (``ZERO_HASH``); an interior node is ``SHA-256(left || right)``;
* one chunk: the root is that chunk's hash; no chunk (empty file): the root is
  ``SHA-256(b"")``.

An inclusion proof for chunk ``i`` is the list of sibling hashes from the leaf
up to the root; with it and the file id alone a chunk can be verified.

Hashing streams the file through one reusable buffer, so a file of any size is
hashed in ``chunk_size`` bytes of memory.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import attrs

from common.errors import IntegrityError, ValidationError

__all__ = [
    "HASH_SIZE",
    "ZERO_HASH",
    "MIN_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "TARGET_CHUNKS",
    "MAX_CHUNKS",
    "MAX_NAME_BYTES",
    "Manifest",
    "ManifestRecord",
    "RECORD_FIELDS",
    "chunk_count_for",
    "chunk_size_for",
    "sha256",
    "merkle_root",
    "merkle_proof",
    "verify_proof",
    "validate_name",
    "check_publishable_name",
    "shown_name",
    "hash_file",
    "build_manifest",
]

HASH_SIZE: Final = 32
ZERO_HASH: Final = bytes(HASH_SIZE)
MIN_CHUNK_SIZE: Final = 1024
MAX_CHUNK_SIZE: Final = 16 * 1024 * 1024
#: :func:`chunk_size_for` cuts a file into at most this many chunks while the chunk size allows:
#: enough independently fetchable pieces to spread a file over many peers, few enough
#: that per-chunk costs (a request, a task wake-up, a thread hop for hashing, an
#: announcement) stay small beside the transfer; a 1 GiB file gets 1 MiB chunks, where
#: hashlib runs at its full speed and 8 requests in flight per connection stay cheap.
TARGET_CHUNKS: Final = 1024
#: 2**19 hashes of 32 bytes make a 16 MiB manifest, the frame limit.
MAX_CHUNKS: Final = 1 << 19
MAX_NAME_BYTES: Final = 255
_EMPTY_ROOT: Final = hashlib.sha256(b"").digest()


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    return hashlib.sha256(data).digest()


def chunk_count_for(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def chunk_size_for(size: int) -> int:
    """The chunk size every publisher uses for a file of ``size`` bytes unless told otherwise (PROTOCOL.md §4.4).

    A file's id depends on its chunk size, so a size that is a function of the
    content gives the same bytes the same id whoever publishes them: one swarm
    per content. It is the smallest power of two from MIN_CHUNK_SIZE (1 KiB) to
    MAX_CHUNK_SIZE (16 MiB) that cuts the file into at most TARGET_CHUNKS
    chunks: 513 to 1024 chunks from 1 MiB to 16 GiB (1 GiB gets 1 MiB chunks),
    fewer below (a 9 KB file is still 9 chunks that downloaders can trade),
    more above.
    """
    if size < 0:
        raise ValidationError(f"a file size is never negative, got {size}")
    least = chunk_count_for(size, TARGET_CHUNKS)  # the least chunk size that keeps to TARGET_CHUNKS chunks
    power = 1 << max(least - 1, 0).bit_length()  # rounded up to a power of two
    return min(MAX_CHUNK_SIZE, max(MIN_CHUNK_SIZE, power))


# ---------------------------------------------------------------------------
# Merkle tree
# ---------------------------------------------------------------------------
def _zero_hashes(levels: int) -> list[bytes]:
    """Roots of all-padding subtrees: level 0 is ZERO_HASH, level k+1 = H(z_k || z_k)."""
    zeros = [ZERO_HASH]
    for _ in range(levels):
        zeros.append(sha256(zeros[-1] + zeros[-1]))
    return zeros


def _parent_level(nodes: list[bytes], zero: bytes) -> list[bytes]:
    # Padding an odd level with that level's zero-subtree root is the same as
    # padding the leaves to a power of two, without hashing the padding.
    if len(nodes) % 2:
        nodes = [*nodes, zero]
    return [sha256(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root over ``leaves`` (chunk hashes), padding rule as in the module docstring."""
    if not leaves:
        return _EMPTY_ROOT
    nodes = list(leaves)
    zeros = _zero_hashes(max(1, len(nodes) - 1).bit_length())
    level = 0
    while len(nodes) > 1:
        nodes = _parent_level(nodes, zeros[level])
        level += 1
    return nodes[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """Sibling hashes from leaf ``index`` up to the root, lowest first."""
    if not 0 <= index < len(leaves):
        raise ValidationError(f"chunk index {index} outside 0..{len(leaves)}")
    nodes = list(leaves)
    zeros = _zero_hashes(max(1, len(nodes) - 1).bit_length())
    proof: list[bytes] = []
    level = 0
    while len(nodes) > 1:
        sibling = index ^ 1
        proof.append(nodes[sibling] if sibling < len(nodes) else zeros[level])
        nodes = _parent_level(nodes, zeros[level])
        index //= 2
        level += 1
    return tuple(proof)


def verify_proof(leaf: bytes, index: int, leaf_count: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``leaf`` is chunk ``index`` of a ``leaf_count``-chunk file whose id is ``root``."""
    if not 0 <= index < leaf_count:
        return False
    if len(proof) != max(0, (leaf_count - 1).bit_length()):
        return False
    node = leaf
    for sibling in proof:
        node = sha256(sibling + node) if index & 1 else sha256(node + sibling)
        index //= 2
    return node == root


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------
def validate_name(name: str) -> str:
    """Check a file's display name; names are labels, never paths."""
    if not isinstance(name, str):
        raise ValidationError(f"file name must be text, got {type(name).__name__}")
    if not name or name.strip() != name:
        raise ValidationError("file name must be non-empty without leading or trailing spaces")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValidationError(f"file name longer than {MAX_NAME_BYTES} bytes")
    if name in (".", ".."):
        raise ValidationError(f"file name {name!r} is reserved")
    if name.isascii():
        # The usual case, without a category look-up per character (tens of microseconds a name, and every
        # entry of a collection's version is checked): ASCII's only Cc characters are the unprintable ones, and
        # it has no Cs, Zl or Zp character.
        if not name.isprintable() or "/" in name or "\\" in name:
            raise ValidationError(f"file name {name!r} contains a separator or control character")
        return name
    for char in name:
        if char in "/\\" or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            raise ValidationError(f"file name {name!r} contains a separator or control character")
    return name


def _invisible(char: str) -> bool:
    # Format characters (Unicode category Cf): the bidirectional overrides and isolates
    # (U+202A-202E, U+2066-2069), the marks U+200E/200F, zero-width U+200B-200D, U+2060,
    # U+FEFF and the like: they change how a name looks, or are not seen at all.
    return unicodedata.category(char) == "Cf"


def check_publishable_name(name: str) -> str:
    """:func:`validate_name`, and no invisible or reordering characters: the rule for a name published from now on.

    Peers check it before they send a PUBLISH and the tracker when it
    receives one (issue 12, finding 9: ``victim\u200b.bin`` and right-to-left
    overrides made look-alikes). Names already catalogued are still decoded
    (:func:`validate_name`) and shown through :func:`shown_name`.
    """
    validate_name(name)
    if name.isascii():
        return name  # (ASCII has no Cf character)
    for char in name:
        if _invisible(char):
            raise ValidationError(f"file name '{shown_name(name)}' contains the invisible or reordering character U+{ord(char):04X}")
    return name


def shown_name(name: str) -> str:
    """``name`` with each invisible or reordering character written as ``\\uXXXX``, so that it shows what it is."""
    if not any(_invisible(char) for char in name):
        return name
    return "".join(f"\\u{ord(char):04x}" if _invisible(char) else char for char in name)


def _validate_hashes(instance: object, attribute: object, hashes: tuple[bytes, ...]) -> None:
    if len(hashes) > MAX_CHUNKS:
        raise ValidationError(f"manifest has {len(hashes)} chunks, more than {MAX_CHUNKS}")
    for digest in hashes:
        if not isinstance(digest, bytes) or len(digest) != HASH_SIZE:
            raise ValidationError("every chunk hash must be 32 bytes")


def _validate_id(instance: object, attribute: object, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValidationError("a file id must be 32 bytes")


def _validate_size(instance: object, attribute: object, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 63:
        raise ValidationError(f"file size must be an integer in 0..2**63, got {value!r}")


def _validate_chunk_size(instance: object, attribute: object, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
        raise ValidationError(f"chunk size must be in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}, got {value!r}")


#: A manifest as plain values: name, size, chunk size, file id, the chunk hashes concatenated.
ManifestRecord = tuple[str, int, int, bytes, bytes]
RECORD_FIELDS: Final = 5


def _hash_tuple(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return value if type(value) is tuple else tuple(value)


@attrs.frozen(cache_hash=True)
class Manifest:
    """What identifies and verifies a file: its name, size, chunk size, chunk hashes and id.

    Construction checks the shape (types, hash lengths, hash count against
    size and chunk size); :meth:`verify` checks that the id is the Merkle root
    of the hashes, which costs one SHA-256 per tree node.
    """

    name: str = attrs.field(validator=lambda i, a, v: validate_name(v))
    size: int = attrs.field(validator=_validate_size)
    chunk_size: int = attrs.field(validator=_validate_chunk_size)
    chunk_hashes: tuple[bytes, ...] = attrs.field(converter=_hash_tuple, validator=_validate_hashes)
    file_id: bytes = attrs.field(validator=_validate_id)

    def __attrs_post_init__(self) -> None:
        expected = chunk_count_for(self.size, self.chunk_size)
        if len(self.chunk_hashes) != expected:
            raise ValidationError(
                f"manifest of {self.size} bytes in {self.chunk_size}-byte chunks needs "
                f"{expected} chunk hashes, has {len(self.chunk_hashes)}"
            )

    @classmethod
    def from_hashes(cls, name: str, size: int, chunk_size: int, chunk_hashes: Sequence[bytes]) -> Manifest:
        return cls(name, size, chunk_size, tuple(chunk_hashes), merkle_root(chunk_hashes))

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_hashes)

    @property
    def hex_id(self) -> str:
        return self.file_id.hex()

    def chunk_length(self, index: int) -> int:
        """Length of chunk ``index``: ``chunk_size`` except for a short last chunk."""
        if not 0 <= index < self.chunk_count:
            raise ValidationError(f"chunk index {index} outside 0..{self.chunk_count}")
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def chunk_offset(self, index: int) -> int:
        return index * self.chunk_size

    def record(self) -> ManifestRecord:
        """The manifest as five plain values, in the order of ``common/PROTOCOL.md`` §4.1.

        The one encoding of a manifest: the PUBLISH and MANIFEST messages, the
        tracker's catalogue and the peer's manifest cache all store this.
        """
        return (self.name, self.size, self.chunk_size, self.file_id, b"".join(self.chunk_hashes))

    @classmethod
    def from_record(cls, record: Sequence[object]) -> Manifest:
        """The manifest of a :meth:`record` (checked as any manifest is; the Merkle root is left to :meth:`verify`)."""
        if len(record) != RECORD_FIELDS:
            raise ValidationError(f"a manifest record has {RECORD_FIELDS} fields, got {len(record)}")
        name, size, chunk_size, file_id, joined = record
        if not isinstance(joined, bytes) or len(joined) % HASH_SIZE:
            raise ValidationError(f"chunk hashes must be a multiple of {HASH_SIZE} bytes")
        hashes = tuple(joined[i : i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE))
        return cls(name, size, chunk_size, hashes, file_id)  # type: ignore[arg-type]  # the validators check the types

    def verify(self) -> None:
        """Raise :class:`IntegrityError` unless the file id is the root of the chunk hashes."""
        root = merkle_root(self.chunk_hashes)
        if root != self.file_id:
            raise IntegrityError(
                f"manifest for {self.name!r} claims id {self.file_id.hex()[:16]} "
                f"but its chunk hashes give {root.hex()[:16]}"
            )

    def verify_chunk(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """Raise :class:`IntegrityError` unless ``data`` is chunk ``index`` of this file."""
        expected_length = self.chunk_length(index)
        if len(data) != expected_length:
            raise IntegrityError(f"chunk {index} has {len(data)} bytes, expected {expected_length}")
        if sha256(data) != self.chunk_hashes[index]:
            raise IntegrityError(f"chunk {index} does not match its SHA-256")

    def proof(self, index: int) -> tuple[bytes, ...]:
        return merkle_proof(self.chunk_hashes, index)


# ---------------------------------------------------------------------------
# Hashing files
# ---------------------------------------------------------------------------
ProgressCallback = Callable[[int], None]


def hash_file(
    path: str | os.PathLike[str], chunk_size: int, progress: ProgressCallback | None = None
) -> tuple[int, list[bytes]]:
    """Stream ``path`` and return ``(size, chunk hashes)`` (see :func:`hash_fd`).

    Blocking: async callers run it in a worker thread.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return hash_fd(fd, chunk_size, progress)
    finally:
        os.close(fd)


def hash_fd(fd: int, chunk_size: int, progress: ProgressCallback | None = None) -> tuple[int, list[bytes]]:
    """Stream the file open at ``fd`` from its start (``pread``: its offset is left alone) and return ``(size, chunk hashes)``.

    Memory stays at one ``chunk_size`` buffer whatever the file size.
    ``progress`` is called with the number of bytes hashed after every chunk.
    Blocking: async callers run it in a worker thread.
    """
    _validate_chunk_size(None, None, chunk_size)
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    hashes: list[bytes] = []
    size = 0
    while True:
        filled = 0
        # Reads may return short counts (pipes, network filesystems).
        while filled < chunk_size:
            got = os.preadv(fd, [view[filled:]], size + filled)
            if not got:
                break
            filled += got
        if not filled:
            break
        hashes.append(hashlib.sha256(view[:filled]).digest())
        size += filled
        if progress is not None:
            progress(filled)
        if filled < chunk_size:
            break
    return size, hashes


def build_manifest(
    path: str | os.PathLike[str],
    chunk_size: int | None = None,
    *,
    name: str | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Hash the file at ``path`` into a :class:`Manifest` named ``name`` (default: its base name).

    ``chunk_size`` None: :func:`chunk_size_for` the file's size, as every publisher does by default.
    """
    if chunk_size is None:
        chunk_size = chunk_size_for(os.stat(path).st_size)
    size, hashes = hash_file(path, chunk_size, progress)
    display = name if name is not None else os.path.basename(os.fspath(path))
    if len(hashes) > MAX_CHUNKS:
        raise ValidationError(
            f"{display!r} needs {len(hashes)} chunks of {chunk_size} bytes; the limit is {MAX_CHUNKS}: use a larger chunk size"
        )
    return Manifest.from_hashes(display, size, chunk_size, hashes)
