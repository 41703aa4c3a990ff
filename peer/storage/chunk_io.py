"""Chunks on disk, one at a time (blocking, for worker threads): read, verify and write, hash.

With ``direct_io`` (``get --direct-io``; off by default) chunks of a download
are written, and read back, through a second descriptor opened with
``O_DIRECT`` where the file system allows it (:func:`open_direct`). It is off
by default: every write waits for the device, and chunks served to other
peers must be read back from it; side by side on this VM, 1 GiB from 1 seeder
to 4 downloaders took 14.0-14.2 s with it and 10.0-10.9 s through the page
cache with the read-back window (:mod:`peer.storage.read_back`). Chunks served
to other peers go by ``sendfile`` from the ordinary descriptor (the kernel
keeps both coherent).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import threading
from collections.abc import Callable, Sequence

from common.errors import StorageError
from common.manifest import Manifest
from peer.storage.fs import storage_error

__all__ = [
    "Buffer",
    "read_chunk",
    "read_chunk_into",
    "verify_and_write",
    "hash_chunks",
    "hash_range",
    "open_direct",
    "direct_aligned",
    "advise",
]

logger = logging.getLogger(__name__)

#: Chunk bytes as they arrive: a view of a receive buffer, or bytes.
Buffer = bytes | bytearray | memoryview

#: O_DIRECT wants offsets, lengths and buffer addresses aligned to the device's logical
#: block size; 4 KiB covers every common device (mmap buffers are page-aligned).
DIRECT_ALIGN = 4096
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


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


def read_chunk_into(fd: int, offset: int, buffer: memoryview) -> None:
    """Fill ``buffer`` with the file's bytes at ``offset`` (blocking); a short file is an error."""
    got = 0
    while got < len(buffer):
        n = os.preadv(fd, [buffer[got:]], offset + got)
        if not n:
            raise StorageError(f"file shorter than expected: {got} of {len(buffer)} bytes at offset {offset}")
        got += n


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
        raise storage_error("write chunk to", f"fd {fd}", exc) from None


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


def hash_range(fd: int, size: int, chunk_size: int, first: int, stop: int, progress: Callable[[int], None] | None = None) -> list[bytes]:
    """The SHA-256 of chunks ``first`` to ``stop - 1`` of the file of ``size`` bytes open at ``fd`` (blocking).

    One slice of a file hashed by several threads at once (hashlib releases the
    GIL on large buffers); a file shorter than ``size`` is a :class:`StorageError`.
    """
    view = _thread_buffer(chunk_size)
    hashes = []
    for index in range(first, stop):
        offset = index * chunk_size
        length = min(chunk_size, size - offset)
        read_chunk_into(fd, offset, view[:length])
        hashes.append(hashlib.sha256(view[:length]).digest())
        if progress is not None:
            progress(length)
    return hashes


#: ``posix_fadvise`` is POSIX but absent on macOS and Windows: there the page cache is left alone.
_fadvise = getattr(os, "posix_fadvise", None)


def advise(fd: int, offset: int, length: int, advice: int) -> None:
    """``posix_fadvise``, where there is one; advice only, so a failure is logged and ignored."""
    if _fadvise is None:
        return
    try:
        _fadvise(fd, offset, length, advice)
    except OSError as exc:  # advice only: the download is right without it
        logger.debug("posix_fadvise(%d) failed: %s", advice, exc)
