"""The page cache a download fills, kept small, and (``verify``) each chunk read back and checked soon after its write (:class:`ReadBack`)."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable

import attrs

from common.manifest import Manifest
from peer.storage.chunk_io import Buffer, advise, hash_chunks

__all__ = ["ReadBack"]

#: Each worker thread's buffer to read chunks back into and compare them, kept for the thread's life.
_buffers = threading.local()


def _compare_buffer(size: int) -> bytearray:
    """This thread's buffer of at least ``size`` bytes (a bytearray: see ``ReadBack._read_back``)."""
    buffer: bytearray | None = getattr(_buffers, "compare", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.compare = bytearray(size)
    return buffer


@attrs.define(eq=False)
class ReadBack:
    """Bounds the page cache a download fills and, with ``verify``, reads each chunk back from disk and checks it.

    Every chunk has been hashed against the manifest before its write, and a
    ``pwrite`` that fails or falls short fails the download (as libtorrent and
    aria2 trust the hash checked before the write). ``verify``
    (``get --verify-writes``) adds the read-back below, at a cost
    (``bench/read_back.py``): through the page cache each chunk is read again
    and compared with the verified bytes it was written from (kept until then,
    up to ``window`` bytes of private memory); through ``direct_fd`` (which
    keeps nothing) it is hashed against the manifest.

    The file is placed only once every chunk has passed this check, so a bad
    write (a wrong offset, a failing device) is caught, and here it is caught
    while the download is still going: the chunk is fetched again rather than
    the whole download failing at the end. A chunk is read back once
    ``window`` more bytes have been written after it, and the last ``window``
    bytes by :meth:`finish`.

    Through the page cache (``direct_fd`` -1) the windows also bound the
    memory a download fills: the bytes kept for the comparison are at most
    ``window`` (private memory: small, as a read-back through the page cache
    checks the same pages however late it comes), and a chunk read back has
    its writeback started (``POSIX_FADV_DONTNEED`` on dirty pages only queues
    them), and ``cache_window - window`` bytes later (at least ``window``)
    its now clean pages are dropped, so the next writes reuse that
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
    #: Page cache bytes a download keeps (young and written back), about; None: twice ``window``.
    cache_window: int | None = None
    #: Called with each chunk's bytes once it has been read back (a receive-buffer pool's ``give_back``).
    release: Callable[[Buffer], None] | None = None
    #: Read each chunk back and check it (else the window only paces the page cache's writeback and drops).
    verify: bool = True
    #: Chunks written and not read back yet, each with the verified bytes that were written.
    _young: deque[tuple[int, Buffer]] = attrs.field(factory=deque)
    _young_bytes: int = 0
    _flushing: deque[int] = attrs.field(factory=deque)
    _flushing_bytes: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @property
    def keeps_data(self) -> bool:
        """True if :meth:`wrote` keeps the chunk's bytes until its read-back (then hands them to ``release``)."""
        return self.verify and self.buffered

    @property
    def buffered(self) -> bool:
        """True if the chunks are written through the page cache (which this then keeps small)."""
        return self.direct_fd < 0

    @property
    def _flush_window(self) -> int:
        return self.window if self.cache_window is None else max(self.window, self.cache_window - self.window)

    def wrote(self, index: int, data: Buffer) -> list[int]:
        """Chunk ``index`` was written from ``data`` (verified, kept until read back): read back the chunks that leave the window; the ones that fail."""
        length = self.manifest.chunk_length
        check: list[tuple[int, Buffer]] = []
        drop: list[int] = []
        with self._lock:
            # Through O_DIRECT the read-back is hashed (the bytes are not kept); without verify nothing is read back.
            self._young.append((index, data if self.keeps_data else b""))
            self._young_bytes += length(index)
            while self._young_bytes > self.window:
                old = self._young.popleft()
                self._young_bytes -= length(old[0])
                check.append(old)
            if self.buffered:  # through the page cache: bound what it holds (see above)
                self._flushing.extend(i for i, _ in check)
                self._flushing_bytes += sum(length(i) for i, _ in check)
                while self._flushing_bytes > self._flush_window:
                    flushed = self._flushing.popleft()
                    self._flushing_bytes -= length(flushed)
                    drop.append(flushed)
        bad = self._read_back(check)
        self._release(check)
        if self.buffered:
            for done in (*(i for i, _ in check), *drop):
                advise(self.fd, self.manifest.chunk_offset(done), length(done), os.POSIX_FADV_DONTNEED)
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
        """The chunks whose bytes on disk differ from what was written (none looked at without ``verify``)."""
        if not self.verify or not chunks:
            return []
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

