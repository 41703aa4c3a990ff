"""A file's bytes as an HTTP body: verified chunk by chunk, read ahead in a worker thread.

Every chunk is read from disk and checked against its SHA-256 in the manifest
(``Manifest.verify_chunk``) before any byte of it is handed to the server: a
chunk that fails is never sent, and the body stops there (the client sees a
body shorter than its ``Content-Length``). Reads are large (several chunks,
up to :data:`BLOCK` bytes, one ``pread`` in a worker thread, where hashing
runs beside the event loop) and one block ahead of the one being sent.

Where the chunks come from is the caller's: ``available(index)`` returns once
chunk ``index`` is on disk, verified, with how many chunks from it are (a held
file: all of them; a download under way: as they verify, :mod:`peer.gateway.fetches`).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from common.errors import ChunkswarmError, IntegrityError, StorageError
from common.manifest import Manifest

__all__ = ["BLOCK", "Available", "SendBody", "send_span", "read_verified"]

#: Bytes read (and hashed) in one worker-thread call: several chunks of a typical file.
BLOCK: Final = 4 * 1024 * 1024

#: Waits until chunk ``index`` may be read; returns how many chunks from ``index`` on may be.
Available = Callable[[int], Awaitable[int]]
#: Hands bytes to the HTTP server (returns once they are on their way).
SendBody = Callable[[bytes], Awaitable[None]]


def read_verified(manifest: Manifest, fd: int, first: int, count: int) -> tuple[bytes, IntegrityError | None]:
    """Blocking: chunks ``first`` .. ``first + count - 1`` of ``fd`` in one read, each checked against the manifest.

    Returns the bytes of the chunks that passed, up to the first that failed,
    and that one's :class:`~common.errors.IntegrityError` (None if all passed).
    A file shorter than the manifest says is a :class:`StorageError`.
    """
    offset = manifest.chunk_offset(first)
    length = sum(manifest.chunk_length(i) for i in range(first, first + count))
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise StorageError(f"{manifest.name}: the file is shorter than its manifest ({len(data)} of {length} bytes at {offset})")
    view = memoryview(data)
    at = 0
    for index in range(first, first + count):
        size = manifest.chunk_length(index)
        try:
            manifest.verify_chunk(index, view[at : at + size])
        except IntegrityError as exc:
            return data[:at], IntegrityError(f"{manifest.name}: chunk {index + 1} read from disk fails verification ({exc})")
        at += size
    return data, None


async def send_span(manifest: Manifest, fd: int, start: int, stop: int, available: Available, send: SendBody,
                    limiter: trio.CapacityLimiter | None = None) -> None:
    """Send bytes ``[start, stop)`` of ``manifest``'s file read from ``fd``: whole chunks verified, one block read ahead.

    ``limiter`` bounds the worker threads reading. Raises what reading or verifying raised (``IntegrityError``, ``StorageError``) or
    ``available`` raised: the caller ends the response there, short.
    """
    if start >= stop:
        return
    size = manifest.chunk_size
    first, last = start // size, (stop - 1) // size
    per_block = max(1, BLOCK // size)
    # Blocks go with the error that ended the reading, if any: the chunks verified before it are sent first.
    blocks: trio.MemorySendChannel[tuple[int, bytes, ChunkswarmError | None]]
    blocks, received = trio.open_memory_channel(1)  # one block read ahead of the one sent

    async def read_ahead() -> None:
        async with blocks:
            index = first
            try:
                while index <= last:
                    count = min(await available(index), per_block, last - index + 1)
                    data, failed = await trio.to_thread.run_sync(read_verified, manifest, fd, index, count, limiter=limiter)
                    await blocks.send((index, data, failed))
                    if failed is not None:
                        return
                    index += count
            except ChunkswarmError as exc:  # what available() or the read raised: chunk ``index`` will not come
                await blocks.send((index, b"", exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_ahead)
        async with received:
            async for index, data, failed in received:
                begin = index * size
                end = begin + len(data)
                if data and (begin < start or end > stop):  # the edges of a range: a part of the block
                    data = data[max(start, begin) - begin : min(stop, end) - begin]
                if data:
                    await send(data)
                if failed is not None:
                    raise failed
