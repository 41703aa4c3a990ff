"""TLS over a trio stream, built for bulk transfer: many records per call, large reads, chunks encrypted in one go.

``trio.SSLStream`` returns at most one TLS record (16 KiB) per
``receive_some`` and refills from its transport 32 KiB at a time, each with a
checkpoint: a GiB through it is some 65,000 calls, each a fresh ``bytes``
copied again into the codec, and it ran at half the open swarm's speed in
bench/swarm.py. :class:`TLSStream` is the same protocol (the standard
library's ``ssl.SSLObject`` over two ``MemoryBIO``s) with the I/O shaped for
chunks:

* :meth:`TLSStream.receive_into` decrypts record after record straight into
  the caller's buffer (a codec's chunk body) until it is full or nothing is
  left, and refills from the socket with one large ``recv_into`` into a buffer
  it keeps (``RAW_RECEIVE_SIZE``);
* :meth:`TLSStream.send_parts` encrypts a frame header and a chunk as one
  write and hands the transport the whole ciphertext at once.

It is a ``trio.abc.Stream`` like ``SSLStream``: explicit or implicit
handshake, ``getpeercert``, close_notify sent on :meth:`TLSStream.aclose`, a
clean close (close_notify) read as end of stream, an EOF without it (a peer
that closes mid-record, or a truncation attack) as ``BrokenResourceError``,
and every TLS failure as ``BrokenResourceError`` whose ``__cause__`` is the
``ssl.SSLError``. One task may receive while another sends; two receivers or
two senders at once are ``BusyResourceError``.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import trio

__all__ = ["TLSStream", "RAW_RECEIVE_SIZE"]

Buffer: TypeAlias = bytes | bytearray | memoryview

#: Ciphertext asked for from the socket per read: many records, one system call, one checkpoint.
RAW_RECEIVE_SIZE = 262144
#: The most plaintext one TLS record holds (RFC 8446 §5.1).
RECORD_SIZE = 16 * 1024


class _Busy:
    """Raises ``trio.BusyResourceError`` when a second task enters while one is inside (trio's rule for streams)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(f"another task is already {self._what} on this stream")
        self._held = True

    def __exit__(self, *exc: object) -> None:
        self._held = False


class TLSStream(trio.abc.Stream):
    """TLS on ``transport_stream`` with ``context`` (a server's when ``server_side``); see the module docstring."""

    def __init__(self, transport_stream: trio.abc.Stream, context: ssl.SSLContext, *, server_side: bool = False) -> None:
        self.transport_stream = transport_stream
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side, server_hostname=None)
        sock = getattr(transport_stream, "socket", None)
        #: A socket's ``recv_into`` (reads into ``_raw``, no bytes object per read), else None: ``receive_some``.
        self._recv_into: Any = sock.recv_into if sock is not None and hasattr(sock, "recv_into") else None
        self._raw: bytearray | None = None
        self._handshake_done = False
        self._handshake_lock = trio.Lock()
        #: Whoever sends what the TLS object wrote holds this: ciphertext goes out in the order it was made.
        self._transport_send_lock = trio.Lock()
        self._receiving = _Busy("receiving")
        self._sending = _Busy("sending")
        self._closed = False
        #: Held around every use of the TLS object and its BIOs: a worker thread may be encrypting (:meth:`send_from_thread`).
        self._lock = threading.Lock()
        #: Why the stream cannot be used any more (a TLS error, a lost transport, ciphertext cut short).
        self._broken: BaseException | None = None

    # -- information ---------------------------------------------------------
    def getpeercert(self, binary_form: bool = False) -> Any:
        """The other side's certificate (``ssl.SSLObject.getpeercert``); None before the handshake or if it showed none."""
        return self._ssl.getpeercert(binary_form)

    def version(self) -> str | None:
        return self._ssl.version()

    def cipher(self) -> tuple[str, str, int] | None:
        return self._ssl.cipher()

    # -- handshake -----------------------------------------------------------
    async def do_handshake(self) -> None:
        """Run the TLS handshake if it has not run (receiving and sending do it first anyway)."""
        self._check_usable()
        if self._handshake_done:
            await trio.lowlevel.checkpoint()
            return
        async with self._handshake_lock:
            while not self._handshake_done:
                try:
                    with self._lock:
                        self._ssl.do_handshake()
                    self._handshake_done = True
                except ssl.SSLWantReadError:
                    await self._flush()
                    await self._refill()
                except ssl.SSLError as exc:
                    await self._flush_quietly()  # the alert that says why, if TLS wrote one
                    raise self._break(exc) from exc
            await self._flush()

    # -- receiving -----------------------------------------------------------
    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Up to ``max_bytes`` of plaintext (several records if they are there); ``b""`` after the other side's close_notify."""
        size = RAW_RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be positive")
        buffer = bytearray(size)
        filled = await self.receive_into(buffer)
        del buffer[filled:]
        return bytes(buffer)

    async def receive_into(self, buffer: Buffer) -> int:
        """Decrypt into ``buffer`` until it is full or nothing more has arrived; the bytes written, 0 at end of stream.

        Waits only while nothing has been written: at least one byte, unless the stream has ended.
        """
        view = memoryview(buffer).cast("B")
        if not view:
            raise ValueError("receive_into needs a buffer of at least one byte")
        with self._receiving:
            await self._ready()
            while True:
                with self._lock:
                    filled, more = self._drain_into(view)
                if filled or not more:
                    break
                await self._refill()
            await self._flush_after_read()
            return filled

    def _drain_into(self, view: memoryview) -> tuple[int, bool]:
        """Decrypt what has arrived into ``view``: (bytes written, whether more may come)."""
        filled, end = 0, len(view)
        read = self._ssl.read
        while filled < end:
            try:
                n: int = read(end - filled, view[filled:])  # type: ignore[assignment]
            except ssl.SSLWantReadError:
                return filled, True
            except ssl.SSLZeroReturnError:
                return filled, False
            except ssl.SSLError as exc:
                if filled:
                    return filled, True
                raise self._break(exc) from exc
            if not n:
                return filled, False  # close_notify
            filled += n
        return filled, True

    async def _refill(self) -> None:
        """Move what the transport has (at least one byte, or its EOF) into the incoming BIO."""
        try:
            if self._recv_into is not None:
                if self._raw is None:
                    self._raw = bytearray(RAW_RECEIVE_SIZE)
                n = await self._recv_into(self._raw)
                if n:
                    with self._lock:
                        self._incoming.write(memoryview(self._raw)[:n])
                    return
            else:
                data = await self.transport_stream.receive_some(RAW_RECEIVE_SIZE)
                if data:
                    with self._lock:
                        self._incoming.write(data)
                    return
        except OSError as exc:  # a trio socket's own errors (a reset) are not translated by trio
            raise self._break(exc) from exc
        except trio.BrokenResourceError as exc:
            raise self._break(exc) from exc
        # End of stream: TLS says whether it was clean (close_notify) or not (SSLEOFError).
        with self._lock:
            self._incoming.write_eof()

    async def _flush_after_read(self) -> None:
        # Reading can make TLS write (an answer to a KeyUpdate, RFC 8446 §4.6.3).
        with self._lock:
            pending = self._outgoing.pending
        if pending:
            await self._flush()

    # -- sending -------------------------------------------------------------
    async def send_all(self, data: Buffer) -> None:
        await self.send_parts((data,))

    async def send_parts(self, parts: Iterable[Buffer]) -> None:
        """Encrypt ``parts`` in order, then send the ciphertext in one go (a frame header and its chunk, unjoined)."""
        with self._sending:
            await self._ready()
            self._encrypt(parts)
            await self._flush()

    async def send_from_thread(self, produce: Callable[[], Iterable[Buffer]]) -> None:
        """Call ``produce`` in a worker thread and encrypt the parts it returns there too, then send them.

        For chunks: the file read and the encryption of a megabyte (both
        release the GIL) run off the event loop, as hashing does (STYLE.md 10).
        """
        with self._sending:
            await self._ready()
            try:
                await trio.to_thread.run_sync(lambda: self._encrypt(produce()))
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled: what was encrypted is not sent, the stream cannot go on
                    self._break(exc)
                raise
            await self._flush()

    def _encrypt(self, parts: Iterable[Buffer]) -> None:
        with self._lock:
            try:
                for part in parts:
                    if len(memoryview(part)):
                        self._ssl.write(part)
            except ssl.SSLError as exc:
                raise self._break(exc) from exc

    async def wait_send_all_might_not_block(self) -> None:
        with self._sending:
            await self._ready()
            await self.transport_stream.wait_send_all_might_not_block()

    async def _flush(self) -> None:
        """Send everything TLS has written so far; a send cut short leaves the stream broken (ciphertext is lost)."""
        async with self._transport_send_lock:
            with self._lock:
                data = self._outgoing.read()
            if not data:
                return
            try:
                await self.transport_stream.send_all(data)
            except OSError as exc:
                raise self._break(exc) from exc
            except BaseException as exc:
                self._break(exc)
                raise

    async def _flush_quietly(self) -> None:
        with trio.move_on_after(1):
            try:
                await self._flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # -- state ---------------------------------------------------------------
    async def _ready(self) -> None:
        if not self._handshake_done:
            await self.do_handshake()
        self._check_usable()

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this TLS stream is closed")
        if self._broken is not None:
            raise trio.BrokenResourceError(f"this TLS stream is broken: {self._broken!r}")

    def _break(self, cause: BaseException) -> trio.BrokenResourceError:
        """Mark the stream broken by ``cause``; the error to raise (``from cause``)."""
        if self._broken is None:
            self._broken = cause
        if isinstance(cause, trio.BrokenResourceError):
            return cause
        return trio.BrokenResourceError(f"TLS failed: {cause}")

    # -- closing -------------------------------------------------------------
    async def aclose(self) -> None:
        """Send close_notify (if the stream still works), then close the transport; never waits for the other side's."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._handshake_done and self._broken is None:
                try:
                    with self._lock:
                        self._ssl.unwrap()
                except ssl.SSLWantReadError:
                    pass  # the other side's close_notify: not waited for
                except ssl.SSLError:
                    pass
                try:
                    await self._flush()
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                    pass
        finally:
            await self.transport_stream.aclose()
