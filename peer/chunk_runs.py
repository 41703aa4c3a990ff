"""A chunk connection's queued requests, and small chunks answered in runs: many frames read in one worker-thread call, sent in one write.

A chunk of up to :data:`SMALL_CHUNK` bytes (a synced folder's small files are
one chunk each) costs far more in per-chunk work on the event loop (a header
sent, the socket waited on, a ``sendfile``) than in bytes. When such a chunk
is next in a connection's queue, the server takes the small chunks queued
behind it too, up to :data:`RUN_BYTES` in all, reads them together in one
worker-thread call and sends the frames in one write: the CHUNK_DATA frames are
the same bytes, in the same order, as if each had been sent alone.

That call also checks that each file is still the one verified
(:meth:`HeldFile.changed`, a ``stat``), and it reads the held files' own
descriptors, borrowed (:meth:`HeldFile.borrow`) rather than duplicated: for
10,000 small files served, the event loop makes 30,000 system calls fewer (a
stat moved to the thread, a dup and a close gone), each of which handed the
GIL to another thread (a scan hashing) and waited to get it back. A chunk whose file changed is left out of the write and answered
``CHUNK_ERROR NOT_HELD`` after it (replies may come out of order, PROTOCOL.md
§7.2), as the usual path answers it.
"""

from __future__ import annotations

import logging

import attrs
import trio

from common.codec import Codec
from common.framing import ErrorCode
from common.messages import ChunkError
from peer.connection import Connection
from peer.request_queue import RequestQueue
from peer.storage.chunk_io import read_chunk
from peer.storage.library import HeldFile, Library

__all__ = ["Run", "SMALL_CHUNK", "RUN_BYTES", "collect_run", "send_run"]

logger = logging.getLogger(__name__)

#: Chunks up to this size are answered in runs.
SMALL_CHUNK = 128 * 1024
#: The bytes of one run at most (one read call, one write).
RUN_BYTES = 1024 * 1024

#: A request: (file id, chunk index).
Key = tuple[bytes, int]


@attrs.define(eq=False)
class Run:
    """Small chunks to send together: (held file, chunk index, frame prefix) each; each held file is borrowed
    (:meth:`HeldFile.borrow`) until :meth:`close`, so its descriptor stays open while the run is read."""

    parts: list[tuple[HeldFile, int, bytes]] = attrs.field(factory=list)
    #: Each chunk's length, in order (kept after :meth:`close`, for the upload counts).
    lengths: list[int] = attrs.field(factory=list)
    nbytes: int = 0
    #: After :meth:`read`: the parts left out, their file changed on disk since it was verified.
    changed: list[tuple[HeldFile, int]] = attrs.field(factory=list)

    def add(self, held: HeldFile, index: int, codec: Codec) -> None:
        length = held.manifest.chunk_length(index)
        prefix = codec.chunk_data_prefix(held.manifest.file_id, index, length)  # first: borrowed, it is in parts (given back)
        held.borrow()
        self.parts.append((held, index, prefix))
        self.lengths.append(length)
        self.nbytes += length

    def read(self) -> bytes:
        """The frames of the chunks whose files are unchanged, whole (blocking: a worker thread's); a file shorter
        than its manifest raises StorageError. ``lengths`` and ``nbytes`` then count the chunks sent only."""
        frames: list[bytes] = []
        lengths: list[int] = []
        for held, index, prefix in self.parts:
            if held.changed():
                self.changed.append((held, index))
                continue
            manifest = held.manifest
            lengths.append(manifest.chunk_length(index))
            frames += (prefix, read_chunk(held.fd, manifest.chunk_offset(index), lengths[-1]))
        self.lengths, self.nbytes = lengths, sum(lengths)
        return b"".join(frames)

    def close(self) -> None:
        """Give the held files back (on the event loop, once :meth:`read` is over, or was never started)."""
        for held, _index, _prefix in self.parts:
            held.give_back()
        self.parts.clear()


def _small(library: Library, key: Key) -> HeldFile | None:
    """The held file whose chunk ``key`` is a small one served now, or None (not held, out of range, large: the usual path answers).

    Whether the file changed on disk is checked as the run is read, in its worker thread."""
    held = library.get(key[0])
    if held is None or key[1] >= held.manifest.chunk_count or not held.may_serve(key[1]):
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
    """Read ``run``'s chunks in one worker-thread call and send its frames in one write.

    A file found changed is served no more (withdrawn, as :meth:`HeldFile.offers` does), its chunk answered NOT_HELD."""
    data = await trio.to_thread.run_sync(run.read)
    if data:
        await conn.send_encoded(data)
    for held, _index in run.changed:
        if not held.withdrawn:
            logger.warning("%s changed on disk: no longer serving it", held.path)
            held.withdraw()
    if run.changed:
        await conn.send_many([ChunkError(held.manifest.file_id, index, ErrorCode.NOT_HELD, "chunk not held") for held, index in run.changed])
