"""Receive buffers a download reuses from one chunk to the next.

A fresh ``bytearray`` per chunk is a fresh megabyte of memory: ``bytearray(n)``
zeroes it, the allocator hands it back to the kernel when it is freed, and it
is faulted in again for the next chunk. Measured in bench/swarm.py
one_to_four, those page faults and the zeroing were about 6% of all CPU time.
Chunks received into buffers that go round skip both.
"""

from __future__ import annotations

import sys

import attrs

__all__ = ["BufferPool"]


@attrs.define(eq=False)
class BufferPool:
    """Buffers of ``size`` bytes (a whole CHUNK_DATA frame body), handed out by :meth:`take` and back by :meth:`give_back`.

    :meth:`take` runs in the event loop thread, :meth:`give_back` in any
    thread (``list.append`` and ``list.pop`` are atomic). At most ``keep`` idle
    buffers are kept; other sizes (a file's shorter last chunk) are plain
    allocations.
    """

    size: int
    keep: int = 16  # idle ones: each is a chunk of private memory
    _free: list[bytearray] = attrs.field(factory=list)

    def take(self, size: int) -> bytearray:
        """A buffer of exactly ``size`` bytes (its content is undefined: the codec overwrites it)."""
        if size == self.size:
            try:
                return self._free.pop()
            except IndexError:
                pass
        return bytearray(size)

    def give_back(self, data: bytes | bytearray | memoryview) -> None:
        """Return the buffer ``data`` (a chunk a codec decoded) is a view of; ``data`` is released and unusable after.

        A buffer anything else can still reach is not reused: memory someone may read is never overwritten.
        """
        if not isinstance(data, memoryview):
            return
        buffer = data.obj
        try:
            data.release()
        except BufferError:
            return  # exported right now (C code is reading it)
        # Views sliced from ``data`` outlive its release and keep a reference to the buffer;
        # two references (``buffer`` and getrefcount's argument) mean nothing else can reach it.
        if isinstance(buffer, bytearray) and len(buffer) == self.size and len(self._free) < self.keep and sys.getrefcount(buffer) == 2:
            self._free.append(buffer)

    @property
    def idle(self) -> int:
        """Buffers ready to be taken again."""
        return len(self._free)
