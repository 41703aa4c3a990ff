"""A chunk connection's queued requests, and small chunks answered in runs: many frames read in one worker-thread call, sent in one write.

A chunk of up to :data:`SMALL_CHUNK` bytes (a synced folder's small files are
one chunk each) costs far more in per-chunk work on the event loop (a header
sent, the socket waited on, a ``sendfile``) than in bytes. When such a chunk
is next in a connection's queue, the server takes the small chunks queued
behind it too, up to :data:`RUN_BYTES` in all, reads them together in one
worker-thread call (each from a descriptor of its own: see the server's note
on ``os.dup``) and sends the frames in one write: the CHUNK_DATA frames are
the same bytes, in the same order, as if each had been sent alone.
"""

from __future__ import annotations

import os

import attrs
import trio

from common.codec import Codec
from peer.connection import Connection
from peer.request_queue import RequestQueue
from peer.storage.chunk_io import read_chunk
from peer.storage.library import HeldFile, Library

__all__ = ["Run", "SMALL_CHUNK", "RUN_BYTES", "collect_run", "send_run"]

#: Chunks up to this size are answered in runs.
SMALL_CHUNK = 128 * 1024
#: The bytes of one run at most (one read call, one write).
RUN_BYTES = 1024 * 1024

#: A request: (file id, chunk index).
Key = tuple[bytes, int]


@attrs.define(eq=False)
class Run:
    """Small chunks to send together: (frame prefix, own descriptor, offset, length) each; :meth:`close` the descriptors."""

    parts: list[tuple[bytes, int, int, int]] = attrs.field(factory=list)
    #: Each chunk's length, in order (kept after :meth:`close`, for the upload counts).
    lengths: list[int] = attrs.field(factory=list)
    nbytes: int = 0

    def add(self, held: HeldFile, index: int, codec: Codec) -> None:
        manifest = held.manifest
        length = manifest.chunk_length(index)
        prefix = codec.chunk_data_prefix(manifest.file_id, index, length)
        self.parts.append((prefix, os.dup(held.fd), manifest.chunk_offset(index), length))
        self.lengths.append(length)
        self.nbytes += length

    def read(self) -> bytes:
        """Every frame, whole (blocking: a worker thread's); a file shorter than its manifest raises StorageError."""
        return b"".join(part for prefix, fd, offset, length in self.parts for part in (prefix, read_chunk(fd, offset, length)))

    def close(self) -> None:
        for _prefix, fd, _offset, _length in self.parts:
            os.close(fd)
        self.parts.clear()


def _small(library: Library, key: Key) -> HeldFile | None:
    """The held file whose chunk ``key`` is a small one served now, or None (not held, out of range, large: the usual path answers)."""
    held = library.get(key[0])
    if held is None or key[1] >= held.manifest.chunk_count or not held.offers(key[1]):
        return None
    return held if held.manifest.chunk_length(key[1]) <= SMALL_CHUNK else None


def collect_run(library: Library, first: Key, queue: RequestQueue, codec: Codec) -> Run | None:
    """``first`` and the small chunks queued right behind it, up to :data:`RUN_BYTES`; None if ``first`` is not a small chunk served."""
    held = _small(library, first)
    if held is None:
        return None
    run = Run()
    run.add(held, first[1], codec)

    def fits(key: Key) -> bool:
        nonlocal held
        held = _small(library, key)
        return held is not None and run.nbytes + held.manifest.chunk_length(key[1]) <= RUN_BYTES

    while (key := queue.take_if(fits)) is not None:
        assert held is not None  # set by fits
        run.add(held, key[1], codec)
    return run


async def send_run(conn: Connection, run: Run) -> None:
    """Read ``run``'s chunks in one worker-thread call and send its frames in one write."""
    await conn.send_encoded(await trio.to_thread.run_sync(run.read))
