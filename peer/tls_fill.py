"""A large buffer filled from TLS with the decryption in a worker thread while the event loop receives (``TLSStream.receive_into(fill=True)``).

The chunk body of a CHUNK_DATA frame has a known length: the downloader wants
all of it. Decrypting on the event loop (about 1 CPU-s per GiB of AES-GCM
here) leaves nobody receiving meanwhile; here a worker thread decrypts record
after record straight into the buffer (``SSLObject.read`` releases the GIL
while OpenSSL works) while the event loop moves ciphertext from the socket
into the incoming BIO. The two meet under the stream's lock, held for one
record's decryption or one BIO write at a time, so the loop is never held up
for more than a record (16 KiB). The feeder stays at most ``AHEAD`` bytes
ahead of the worker: what it has received beyond that waits in the kernel.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["Fill", "AHEAD"]

#: Ciphertext waiting in the incoming BIO at most before the feeder waits for the worker
#: (each BIO write moves what is unread to the front of its buffer: keep it short).
AHEAD = 512 * 1024


class Fill:
    """One fill of ``view`` from ``filled`` on: the worker's :meth:`decrypt` and the event loop's :meth:`feed`, run together.

    ``tls`` is the ``ssl.SSLObject``, ``incoming`` its incoming BIO, ``lock``
    the stream's lock around both; ``refill`` moves what the transport has
    into the BIO (its EOF included) and says whether the stream goes on;
    ``fail`` turns a TLS error into the stream's (it marks the stream broken).
    """

    def __init__(self, view: memoryview, filled: int, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, lock: threading.Lock,
                 refill: Callable[[], Awaitable[bool]], fail: Callable[[BaseException], BaseException]) -> None:  # fmt: skip
        self.view = view
        #: Bytes of ``view`` filled: set when :meth:`decrypt` returns (or fails).
        self.filled = filled
        self._done = filled
        self._tls = tls
        self._incoming = incoming
        self._lock = lock
        self._refill = refill
        self._fail = fail
        self._token = trio.lowlevel.current_trio_token()
        self._cond = threading.Condition()
        #: Ciphertext has been fed since the worker last ran dry.
        self._arrived = False
        #: The feeder has ended (end of stream, a failure, a cancel): the worker stops once it has used what is there.
        self._ended = False
        #: The feeder waits for the worker to catch up (the BIO holds ``AHEAD`` bytes).
        self._paused = False
        self._caught_up = trio.Event()

    # -- the worker thread ---------------------------------------------------
    def decrypt(self) -> int:
        """Decrypt into the view until it is full or the stream ends; the bytes in it (run in a worker thread)."""
        view, end = self.view, len(self.view)
        read, lock, incoming = self._tls.read, self._lock, self._incoming
        filled = self.filled
        try:
            return self._decrypt(view, end, filled, read, lock, incoming)
        finally:
            self.filled = self._done

    def _decrypt(self, view: memoryview, end: int, filled: int, read: Any, lock: threading.Lock, incoming: ssl.MemoryBIO) -> int:
        while filled < end:
            try:
                with lock:
                    n: Any = read(end - filled, view[filled:])
                    pending = incoming.pending
            except ssl.SSLWantReadError:
                if not self._wait_for_ciphertext():
                    break
                continue
            except ssl.SSLZeroReturnError:
                break
            except ssl.SSLError as exc:
                raise self._fail(exc) from exc
            if not n:
                break  # close_notify
            filled += n
            self._done = filled
            if self._paused and pending < AHEAD // 2:
                self._paused = False
                self._token.run_sync_soon(self._caught_up.set)
        return filled

    def _wait_for_ciphertext(self) -> bool:
        """Wait until the feeder has fed more; False if it has ended with nothing more."""
        if self._paused:
            self._paused = False
            self._token.run_sync_soon(self._caught_up.set)
        with self._cond:
            while not self._arrived and not self._ended:
                self._cond.wait()
            arrived, self._arrived = self._arrived, False
            return arrived

    # -- the event loop --------------------------------------------------------
    async def feed(self) -> None:
        """Move ciphertext from the transport into the BIO for the worker until cancelled or the stream ends."""
        try:
            while True:
                going = await self._refill()
                with self._cond:
                    self._arrived = True
                    self._cond.notify()
                if not going:
                    return
                with self._lock:
                    full = self._incoming.pending >= AHEAD
                if full:
                    self._caught_up = trio.Event()
                    self._paused = True
                    with self._lock:
                        full = self._incoming.pending >= AHEAD // 2  # the worker may have caught up already
                    if full:
                        await self._caught_up.wait()
                    self._paused = False
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify()
