"""All disk access of a peer: held files, part files, resume state, manifest cache, final placement.

Functions here are synchronous and blocking on purpose: the trio code runs
them through ``trio.to_thread.run_sync`` (chunk-sized reads, writes and hashes
release the GIL, so two worker threads really use two cores).

Crash safety of a download without an fsync per chunk: the state file lists a
chunk only after its ``pwrite`` has returned, it is replaced atomically
(write a temporary file, then ``os.replace``), and on resume every chunk it
lists is hashed again, so a part file truncated or corrupted by a power cut
is never trusted blindly.

Every written chunk is read back and checked while the download goes on
(:class:`ReadBack`), which also keeps the page cache a download fills to a
rolling window: see there for why that matters and what it saved.

With ``direct_io`` (``get --direct-io``; off by default) chunks of a download
are written, and read back, through a second descriptor opened with
``O_DIRECT`` where the file system allows it (:func:`open_direct`). It is off
by default: every write waits for the device, and chunks served to other
peers must be read back from it; side by side on this VM, 1 GiB from 1 seeder
to 4 downloaders took 14.0-14.2 s with it and 10.0-10.9 s through the page
cache with the read-back window. Chunks served to other peers go by
``sendfile`` from the ordinary descriptor (the kernel keeps both coherent).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import mmap
import os
import pathlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence

import attrs
import msgpack

from common.chunkset import ChunkSet
from common.errors import IntegrityError, StorageError, ValidationError
from common.manifest import Manifest, ProgressCallback, build_manifest

__all__ = [
    "HeldFile",
    "Library",
    "ReadBack",
    "Buffer",
    "ManifestCache",
    "PartFile",
    "expand_paths",
    "open_published",
    "read_chunk",
    "verify_and_write",
    "hash_chunks",
    "open_direct",
    "direct_aligned",
    "place_file",
    "STATE_SUFFIX",
    "PART_SUFFIX",
]

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"
STATE_SUFFIX = ".state"
_STATE_VERSION = 1
#: Far more than the state of the largest file (2**18 ranges of a few bytes each):
#: a file larger than this is not ours to parse.
_MAX_STATE_BYTES = 16 * 1024 * 1024

#: Chunk bytes as they arrive: a view of a receive buffer, or bytes.
Buffer = bytes | bytearray | memoryview


def _storage_error(action: str, path: os.PathLike[str] | str, exc: OSError) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = exc.strerror if exc.strerror and exc.strerror.startswith("disk full") else "disk full"
    else:
        reason = exc.strerror or str(exc)
    return StorageError(f"cannot {action} {os.fspath(path)}: {reason}")


# ---------------------------------------------------------------------------
# Files a peer holds and serves
# ---------------------------------------------------------------------------
@attrs.define(eq=False)
class HeldFile:
    """A file the peer serves chunks of: a published file or a (partial) download.

    ``fd`` stays open for the life of the entry; it survives the rename of a
    part file into place. ``signature`` is the (size, mtime_ns) recorded when
    the file was verified; if the file on disk stops matching it, the file is
    withdrawn (a published file edited under our feet must not be served).
    """

    manifest: Manifest
    path: pathlib.Path
    fd: int
    have: ChunkSet
    signature: tuple[int, int] | None = None
    withdrawn: bool = False
    #: A second, ``O_DIRECT`` descriptor on a download's part file, or -1 (see :func:`open_direct`).
    direct_fd: int = -1

    @property
    def complete(self) -> bool:
        return self.have.complete

    def offers(self, index: int) -> bool:
        """True if chunk ``index`` may be served now (re-checks the file on disk)."""
        if self.withdrawn or index not in self.have:
            return False
        if self.signature is not None and _signature(self.path) != self.signature:
            logger.warning("%s changed on disk: no longer serving it", self.path)
            self.withdrawn = True
            return False
        return True

    def close(self) -> None:
        self.fd = _close(self.fd)
        self.direct_fd = _close(self.direct_fd)


def _close(fd: int) -> int:
    """Close ``fd`` if open; the value to store in its place (-1)."""
    if fd >= 0:
        os.close(fd)
    return -1


def _signature(path: pathlib.Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@attrs.define(eq=False)
class Library:
    """The files a peer holds, by file id."""

    files: dict[bytes, HeldFile] = attrs.field(factory=dict)

    def get(self, file_id: bytes) -> HeldFile | None:
        return self.files.get(file_id)

    def add(self, held: HeldFile) -> None:
        old = self.files.get(held.manifest.file_id)
        if old is not None and old is not held:
            old.close()
        self.files[held.manifest.file_id] = held

    def remove(self, file_id: bytes) -> None:
        held = self.files.pop(file_id, None)
        if held is not None:
            held.close()

    def close(self) -> None:
        for held in self.files.values():
            held.close()
        self.files.clear()


def open_published(path: pathlib.Path, manifest: Manifest, signature: tuple[int, int]) -> HeldFile:
    """A complete file to serve; ``signature`` is the (size, mtime_ns) its manifest was computed for."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise _storage_error("open", path, exc) from None
    return HeldFile(manifest, path, fd, ChunkSet.full(manifest.chunk_count), signature)


def read_chunk(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (blocking); a short file is an error, never a short chunk."""
    parts = []
    got = 0
    while got < length:
        data = os.pread(fd, length - got, offset + got)
        if not data:
            raise StorageError(f"file shorter than expected: {got} of {length} bytes at offset {offset}")
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def expand_paths(paths: Iterable[os.PathLike[str] | str]) -> list[pathlib.Path]:
    """Regular files named by ``paths``; a directory stands for every regular file inside it."""
    out: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    child = pathlib.Path(root, name)
                    if child.is_file() and not child.is_symlink():
                        out.append(child)
        elif path.is_file():
            out.append(path)
        else:
            raise StorageError(f"{path}: no such file or directory")
    return out


# ---------------------------------------------------------------------------
# Manifest cache
# ---------------------------------------------------------------------------
@attrs.define(eq=False)
class ManifestCache:
    """Manifests of published files, keyed by absolute path, size, mtime and chunk size.

    One small MessagePack file per entry under ``state_dir/manifests``, written
    atomically, so peers sharing a state directory never see half an entry.
    """

    directory: pathlib.Path

    @staticmethod
    def _key(path: pathlib.Path, signature: tuple[int, int], chunk_size: int) -> str:
        # "record": entries hold Manifest.record(); entries of the older field order have other keys.
        text = f"record\0{path.resolve()}\0{signature[0]}\0{signature[1]}\0{chunk_size}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, path: pathlib.Path, signature: tuple[int, int], chunk_size: int) -> Manifest | None:
        entry = self.directory / self._key(path, signature, chunk_size)
        try:
            manifest = Manifest.from_record(msgpack.unpackb(entry.read_bytes(), raw=False))
            manifest.verify()
        except (OSError, ValueError, TypeError, ValidationError, IntegrityError, msgpack.UnpackException):
            return None
        return manifest

    def put(self, path: pathlib.Path, signature: tuple[int, int], manifest: Manifest) -> None:
        entry = self.directory / self._key(path, signature, manifest.chunk_size)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _atomic_write(entry, msgpack.packb(manifest.record(), use_bin_type=True))
        except OSError as exc:
            logger.warning("cannot cache the manifest of %s: %s", path, exc)

    def manifest_for(
        self, path: pathlib.Path, chunk_size: int, progress: ProgressCallback | None = None
    ) -> tuple[Manifest, tuple[int, int], bool]:
        """The manifest of ``path`` (cached, or hashed now), its signature, and whether it came from the cache.

        ``progress`` is called with the bytes hashed after every chunk, in this (worker) thread.
        """
        signature = _signature(path)
        if signature is None:
            raise StorageError(f"{path}: cannot read it")
        cached = self.get(path, signature, chunk_size)
        if cached is not None:
            return cached, signature, True
        try:
            manifest = build_manifest(path, chunk_size, progress=progress)
        except OSError as exc:
            raise _storage_error("read", path, exc) from None
        after = _signature(path)
        if after != signature:
            raise StorageError(f"{path} changed while it was being hashed")
        self.put(path, signature, manifest)
        return manifest, signature, False


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except OSError:
        # A full disk fails the write: leave no half-written temporary file behind.
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------------
# Hashing and writing chunks (blocking, for worker threads)
# ---------------------------------------------------------------------------
#: O_DIRECT wants offsets, lengths and buffer addresses aligned to the device's logical
#: block size; 4 KiB covers every common device (mmap buffers are page-aligned).
DIRECT_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


def open_direct(path: os.PathLike[str] | str) -> int:
    """A read-write ``O_DIRECT`` descriptor on ``path``, or -1 where that is not supported (tmpfs, macOS)."""
    if not _O_DIRECT:
        return -1
    try:
        return os.open(path, os.O_RDWR | _O_DIRECT)
    except OSError:
        return -1


def direct_aligned(manifest: Manifest, index: int) -> bool:
    """True if chunk ``index`` may be written through an ``O_DIRECT`` descriptor."""
    return manifest.chunk_offset(index) % DIRECT_ALIGN == 0 and manifest.chunk_length(index) % DIRECT_ALIGN == 0


#: One page-aligned buffer per worker thread, kept for the thread's life: the bounce buffer of
#: O_DIRECT writes (received chunks are ordinary bytearrays, not aligned) and the buffer chunks
#: are read into to be hashed. Reused memory stays touched, where a new buffer per chunk would
#: fault in fresh pages.
_buffers = threading.local()


def _thread_buffer(size: int) -> memoryview:
    """This thread's aligned buffer, at least ``size`` bytes rounded up to whole blocks (O_DIRECT reads stop at EOF)."""
    size = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None or len(view) < size:
        view = _buffers.view = memoryview(mmap.mmap(-1, size))
    return view


def _compare_buffer(size: int) -> bytearray:
    """This thread's buffer to read chunks into and compare them (a bytearray: see ReadBack._read_back)."""
    buffer: bytearray | None = getattr(_buffers, "compare", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.compare = bytearray(size)
    return buffer


def _aligned_copy(data: memoryview) -> memoryview:
    view = _thread_buffer(len(data))[: len(data)]
    view[:] = data
    return view


def verify_and_write(manifest: Manifest, fd: int, index: int, data: bytes | bytearray | memoryview) -> None:
    """Check ``data`` against chunk ``index``'s hash, then write it at its offset.

    ``fd`` may be an ``O_DIRECT`` descriptor from :func:`open_direct` if the
    chunk is :func:`direct_aligned`. Raises :class:`IntegrityError` (nothing
    written) or :class:`StorageError`.
    """
    manifest.verify_chunk(index, data)
    offset = manifest.chunk_offset(index)
    view = memoryview(data)
    written = 0
    try:
        if _O_DIRECT and len(view) and fcntl.fcntl(fd, fcntl.F_GETFL) & _O_DIRECT:
            view = _aligned_copy(view)
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
    except OSError as exc:
        raise _storage_error("write chunk to", f"fd {fd}", exc) from None


#: ``posix_fadvise`` is POSIX but absent on macOS and Windows: there the page cache is left alone.
_fadvise = getattr(os, "posix_fadvise", None)


def _advise(fd: int, offset: int, length: int, advice: int) -> None:
    if _fadvise is None:
        return
    try:
        _fadvise(fd, offset, length, advice)
    except OSError as exc:  # advice only: the download is right without it
        logger.debug("posix_fadvise(%d) failed: %s", advice, exc)


@attrs.define(eq=False)
class ReadBack:
    """Reads each chunk of a download back from disk and checks it, soon after it is written.

    Through the page cache the chunk is compared with the verified bytes it was
    written from (kept until then); through ``direct_fd`` (which keeps nothing)
    it is hashed against the manifest.

    The file is placed only once every chunk has passed this check, so a bad
    write (a wrong offset, a failing device) is caught, and here it is caught
    while the download is still going: the chunk is fetched again rather than
    the whole download failing at the end. A chunk is read back once
    ``window`` more bytes have been written after it, and the last ``window``
    bytes by :meth:`finish`.

    Through the page cache (``direct_fd`` -1) the window also bounds the
    memory a download fills: a chunk read back has its writeback started
    (``POSIX_FADV_DONTNEED`` on dirty pages only queues them), and ``window``
    bytes later its now clean pages are dropped, so the next writes reuse that
    memory at once. Young chunks, the ones other downloaders ask for, stay
    cached. Without this a download leaves the whole file cached and dirty, and
    on a VM whose balloon reports free pages to the host every fresh page costs
    a host fault: measured here, a buffered ``pwrite`` of 1 GiB into a new file
    took 3.0 CPU-s, 0.4 with a 64 MiB window. Through ``direct_fd`` the read
    goes to the device.

    :meth:`wrote` is called from the worker threads that write chunks.
    """

    manifest: Manifest
    fd: int
    window: int
    direct_fd: int = -1
    #: Called with each chunk's bytes once it has been read back (a receive-buffer pool's ``give_back``).
    release: Callable[[Buffer], None] | None = None
    #: Chunks written and not read back yet, each with the verified bytes that were written.
    _young: deque[tuple[int, Buffer]] = attrs.field(factory=deque)
    _young_bytes: int = 0
    _flushing: deque[int] = attrs.field(factory=deque)
    _flushing_bytes: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def keeps_data(self) -> bool:
        """True if :meth:`wrote` keeps the chunk's bytes until its read-back (then hands them to ``release``)."""
        return self.direct_fd < 0

    def wrote(self, index: int, data: Buffer) -> list[int]:
        """Chunk ``index`` was written from ``data`` (verified, kept until read back): read back the chunks that leave the window; the ones that fail."""
        length = self.manifest.chunk_length
        check: list[tuple[int, Buffer]] = []
        drop: list[int] = []
        with self._lock:
            # Through O_DIRECT the read-back is hashed (the bytes are not kept).
            self._young.append((index, data if self.keeps_data else b""))
            self._young_bytes += length(index)
            while self._young_bytes > self.window:
                old = self._young.popleft()
                self._young_bytes -= length(old[0])
                check.append(old)
            if self.keeps_data:  # through the page cache: bound what it holds (see above)
                self._flushing.extend(i for i, _ in check)
                self._flushing_bytes += sum(length(i) for i, _ in check)
                while self._flushing_bytes > self.window:
                    flushed = self._flushing.popleft()
                    self._flushing_bytes -= length(flushed)
                    drop.append(flushed)
        bad = self._read_back(check)
        self._release(check)
        if self.keeps_data:
            for done in (*(i for i, _ in check), *drop):
                _advise(self.fd, self.manifest.chunk_offset(done), length(done), os.POSIX_FADV_DONTNEED)
        return bad

    def finish(self, part: int = 0, parts: int = 1) -> list[int]:
        """Read back the chunks still in the window (every ``parts``-th from ``part``); the ones that fail."""
        with self._lock:
            check = list(self._young)[part::parts]
        return self._read_back(check)

    def close(self) -> None:
        """Let go of the bytes kept for chunks not read back (after :meth:`finish`)."""
        with self._lock:
            chunks = list(self._young)
            self._young.clear()
            self._young_bytes = 0
        self._release(chunks)

    def _release(self, chunks: list[tuple[int, Buffer]]) -> None:
        if self.release is not None:
            for _, data in chunks:
                self.release(data)

    def _read_back(self, chunks: list[tuple[int, Buffer]]) -> list[int]:
        """The chunks whose bytes on disk differ from what was written."""
        if not self.keeps_data:
            indexes = [i for i, _ in chunks]
            good = set(hash_chunks(self.manifest, self.fd, indexes, self.direct_fd))
            return [i for i in indexes if i not in good]
        # Compared with the verified bytes that were written, not hashed again: the same
        # guarantee (those bytes matched the manifest), at memcmp speed (0.05 ms per MiB read
        # and compared, against 0.6 ms to hash it).
        buffer = _compare_buffer(self.manifest.chunk_size)
        view = memoryview(buffer)
        bad = []
        for index, data in chunks:
            length = self.manifest.chunk_length(index)
            try:
                got = os.preadv(self.fd, [view[:length]], self.manifest.chunk_offset(index))
            except OSError:
                got = -1
            # startswith: a bytearray compares with any buffer by memcmp (== on two memoryviews
            # goes item by item, 40 times slower).
            if got != length or len(data) != length or not buffer.startswith(data):
                bad.append(index)
        view.release()
        return bad


def hash_chunks(manifest: Manifest, fd: int, indexes: Sequence[int], direct_fd: int = -1) -> list[int]:
    """The chunks among ``indexes`` whose bytes on disk match the manifest.

    With ``direct_fd`` (an ``O_DIRECT`` descriptor on the same file) the
    chunks are read from the device without filling the page cache, except
    any it cannot read (unaligned): those are read through ``fd``.
    """
    good = []
    view = _thread_buffer(manifest.chunk_size)
    for index in indexes:
        length = manifest.chunk_length(index)
        offset = manifest.chunk_offset(index)
        got = -1
        if direct_fd >= 0 and offset % DIRECT_ALIGN == 0:
            try:
                got = os.preadv(direct_fd, [view[: -(-length // DIRECT_ALIGN) * DIRECT_ALIGN]], offset)
            except OSError:
                got = -1
        if got != length:
            try:
                got = os.preadv(fd, [view[:length]], offset)
            except OSError:
                continue
        if got == length and hashlib.sha256(view[:length]).digest() == manifest.chunk_hashes[index]:
            good.append(index)
    return good


# ---------------------------------------------------------------------------
# Part files and resume state
# ---------------------------------------------------------------------------
@attrs.define(eq=False)
class PartFile:
    """``NAME.part`` in the output directory, with its resume state in ``NAME.part.state``."""

    manifest: Manifest
    final_path: pathlib.Path
    fd: int = -1
    #: Open a second, ``O_DIRECT`` descriptor (see :func:`open_direct` and ``PeerConfig.direct_io``).
    direct_io: bool = False
    #: An ``O_DIRECT`` descriptor on the part file for chunk writes and checks, or -1.
    direct_fd: int = -1

    @property
    def path(self) -> pathlib.Path:
        return self.final_path.with_name(self.final_path.name + PART_SUFFIX)

    @property
    def state_path(self) -> pathlib.Path:
        return self.final_path.with_name(self.final_path.name + PART_SUFFIX + STATE_SUFFIX)

    def open(self) -> list[int]:
        """Open (or create and preallocate) the part file; return the chunks the resume state claims."""
        claimed = self._read_state()
        flags = os.O_RDWR | os.O_CREAT
        if not claimed:
            flags |= os.O_TRUNC
        try:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise _storage_error("create", self.path, exc) from None
        try:
            st = os.fstat(self.fd)
            size = st.st_size
            # Disk full is reported now, not after minutes of downloading.
            vfs = os.fstatvfs(self.fd)
            free = vfs.f_bavail * vfs.f_frsize
            needed = self.manifest.size - min(st.st_blocks * 512, self.manifest.size)
            if needed > free:
                raise OSError(errno.ENOSPC, f"disk full: {needed} bytes needed, {free} free")
            if size != self.manifest.size:
                os.ftruncate(self.fd, self.manifest.size)
            if hasattr(os, "posix_fallocate") and self.manifest.size:
                # Reserve the blocks (and measured faster writes than into a sparse file).
                try:
                    os.posix_fallocate(self.fd, 0, self.manifest.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                        raise
        except OSError as exc:
            self.close()
            raise _storage_error("preallocate", self.path, exc) from None
        self.direct_fd = open_direct(self.path) if self.direct_io else -1
        # Chunks are read whole, in no useful order (sent to peers, read back): readahead
        # would only fill pages of chunks not written yet, or dropped on purpose (ReadBack).
        _advise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        # Chunks entirely beyond a truncated file cannot be there.
        return [i for i in claimed if i < self.manifest.chunk_count and size >= self.manifest.chunk_offset(i) + self.manifest.chunk_length(i)]

    def _read_state(self) -> list[int]:
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("cannot read the resume state %s (%s); downloading from the start", self.state_path, exc.strerror or exc)
            return []
        try:
            if len(raw) > _MAX_STATE_BYTES:
                raise ValueError(f"{len(raw)} bytes, more than any resume state")
            state = json.loads(raw)
            if (
                state.get("version") != _STATE_VERSION
                or state.get("file_id") != self.manifest.hex_id
                or state.get("chunk_size") != self.manifest.chunk_size
                or not self.path.exists()
            ):
                return []
            done = ChunkSet.from_ranges(self.manifest.chunk_count, tuple(tuple(r) for r in state["done"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser goes.
            logger.warning("ignoring the unreadable resume state %s (%s); downloading from the start", self.state_path, exc)
            return []
        return list(done)

    def save_state(self, done: ChunkSet) -> None:
        """Record ``done`` (chunks already written) atomically."""
        state = {
            "version": _STATE_VERSION,
            "file_id": self.manifest.hex_id,
            "name": self.manifest.name,
            "size": self.manifest.size,
            "chunk_size": self.manifest.chunk_size,
            "done": [list(r) for r in done.ranges()],
        }
        try:
            _atomic_write(self.state_path, json.dumps(state).encode())
        except OSError as exc:
            raise _storage_error("save download state", self.state_path, exc) from None

    def verify_all(self, indexes: Sequence[int] | None = None) -> list[int]:
        """Hash chunks on disk (blocking); the ones that match."""
        return hash_chunks(self.manifest, self.fd, range(self.manifest.chunk_count) if indexes is None else indexes, self.direct_fd)

    def close(self) -> None:
        self.fd = _close(self.fd)
        self.direct_fd = _close(self.direct_fd)

    def discard_state(self) -> None:
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass


def same_content(path: pathlib.Path, manifest: Manifest) -> bool:
    """True if ``path`` already holds exactly the file of ``manifest`` (blocking)."""
    try:
        if os.stat(path).st_size != manifest.size:
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return len(hash_chunks(manifest, fd, range(manifest.chunk_count))) == manifest.chunk_count
    finally:
        os.close(fd)


def place_file(part: pathlib.Path, final: pathlib.Path, manifest: Manifest, *, force: bool) -> None:
    """Move the verified part file to ``final`` atomically.

    Never replaces a different existing file unless ``force``; an existing
    identical file is kept and the part file dropped.
    """
    try:
        if force:
            os.replace(part, final)
            return
        try:
            os.link(part, final)  # fails if final exists: no window where another file is overwritten
        except FileExistsError:
            if same_content(final, manifest):
                os.unlink(part)
                return
            raise StorageError(f"{final} already exists with other content (use --force to overwrite it)") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP):
                raise
            if final.exists():
                if same_content(final, manifest):
                    os.unlink(part)
                    return
                raise StorageError(f"{final} already exists with other content (use --force to overwrite it)") from None
            os.replace(part, final)
            return
        os.unlink(part)
    except OSError as exc:
        raise _storage_error("move into place", final, exc) from None
