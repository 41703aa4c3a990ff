"""A thin trio shell around the sans-I/O :class:`~common.codec.Codec`, over any ``trio.abc.Stream``.

Trio's errors are translated here, once: a broken, closed or reset stream
becomes :class:`~common.errors.ConnectionClosed`, a timeout
:class:`~common.errors.PeerTimeout`.

Two fast paths apply when the stream is a socket (it has a ``socket``
attribute, as ``trio.SocketStream`` does); with any other stream, memory
streams in tests for instance, the plain ``receive_some``/``send_all`` paths
give the same results:

* receiving a large frame body goes straight into the codec's body buffer
  with ``recv_into`` (no intermediate bytes object);
* :meth:`Connection.send_file_range` sends chunk bytes from a file with
  ``os.sendfile`` (no copy through Python at all).

Under TLS (a :class:`~peer.tls_stream.TLSStream`, private swarms) a large
frame body is decrypted straight into the codec's body buffer, many records
per call, and a chunk is read into a buffer the connection keeps and
encrypted with its header in a worker thread (as files are read and chunks
hashed), without joining them: no ``bytes`` per record or per chunk.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import trio

from common.codec import CLOSED, NEED_DATA, Codec
from common.errors import ConnectionClosed, PeerTimeout, StorageError
from common.messages import Message
from peer.storage.chunk_io import read_chunk, read_chunk_into
from peer.tls_stream import TLSStream

__all__ = ["Connection", "RECEIVE_SIZE"]

#: Bytes asked for per ``receive_some`` outside large frame bodies.
RECEIVE_SIZE = 256 * 1024
#: Bytes asked for from a socket between frames (headers and small messages).
FRAME_START_SIZE = 16 * 1024


class Connection:
    """Framed messages over one stream; one receiver task, any number of senders (they share a lock)."""

    def __init__(self, stream: trio.abc.Stream, *, codec: Codec | None = None) -> None:
        self.stream = stream
        self.codec = codec if codec is not None else Codec()
        self._send_lock = trio.Lock()
        sock = getattr(stream, "socket", None)
        self._socket: Any = sock if sock is not None and hasattr(sock, "recv_into") else None
        #: Where addresses are read: the socket, or the one under TLS (``peer/secure.py``).
        self._address_socket: Any = self._socket or getattr(getattr(stream, "transport_stream", None), "socket", None)
        self._tls = stream if isinstance(stream, TLSStream) else None
        #: Bytes asked for between frames: a connection that receives many small frames at once (sync's bulk
        #: fetch) asks for more, so that one read takes several frames.
        self.frame_start_size = FRAME_START_SIZE
        #: Under TLS, what chunks are read into to be encrypted (grown to the largest chunk sent, then reused).
        self._chunk_buffer = bytearray()
        self.closed = False
        #: Bytes received so far (a source part-way through its first chunk is delivering).
        self.received = 0

    # -- addresses -----------------------------------------------------------
    @property
    def remote_address(self) -> tuple[str, int] | None:
        if self._address_socket is None:
            return None
        try:
            name = self._address_socket.getpeername()
        except OSError:
            return None
        return str(name[0]), int(name[1])

    # -- receiving -----------------------------------------------------------
    async def receive(self) -> Message:
        """The next message; :class:`ConnectionClosed` at end of stream."""
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                await self._receive_more()
                continue
            if event is CLOSED:
                raise ConnectionClosed("the other side closed the connection")
            return event  # type: ignore[return-value]

    async def receive_within(self, seconds: float) -> Message:
        """:meth:`receive`, or :class:`PeerTimeout` after ``seconds``."""
        try:
            with trio.fail_after(seconds):
                return await self.receive()
        except trio.TooSlowError:
            raise PeerTimeout(f"no message within {seconds:g} s") from None

    async def _receive_more(self) -> None:
        codec = self.codec
        try:
            if self._socket is None:
                tls = self._tls
                if tls is None:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                elif (body := codec.get_buffer()) is not None:
                    count = await tls.receive_into(body)
                    self.received += count
                    codec.buffer_updated(count)
                    return
                else:
                    data = await tls.receive_some(FRAME_START_SIZE)  # as with a socket, below
                self.received += len(data)
                codec.receive_data(data)
                return
            buffer = codec.get_buffer()
            if buffer is not None:
                count = await self._socket.recv_into(buffer)
                self.received += count
                codec.buffer_updated(count)
            else:
                # Between frames: a small read, so that the body of a large frame that
                # follows is received in place (recv_into) rather than copied.
                data = await self.stream.receive_some(self.frame_start_size)
                self.received += len(data)
                codec.receive_data(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection lost") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc.strerror or exc}") from None

    # -- sending -------------------------------------------------------------
    async def send(self, message: Message) -> None:
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[Message]) -> None:
        """Send several messages in one write (requests are batched this way)."""
        data = b"".join(self.codec.send(m) for m in messages)
        async with self._send_lock:
            await self._send_all(data)

    async def send_encoded(self, data: bytes) -> None:
        """Send frames encoded already (a run of chunks, ``peer/chunk_runs.py``) in one write."""
        async with self._send_lock:
            await self._send_all(data)

    async def send_file_range(self, prefix: bytes, fd: int, offset: int, count: int) -> None:
        """Send ``prefix`` then ``count`` bytes of the file ``fd`` at ``offset``, as one frame.

        With a socket the file bytes go by ``os.sendfile``; otherwise they are
        read in a worker thread. A file that turns out shorter than ``count``
        raises :class:`StorageError` after the frame has been started, so the
        caller must close the connection then.
        """
        async with self._send_lock:
            if self._tls is not None:
                if len(self._chunk_buffer) < count:
                    self._chunk_buffer = bytearray(count)
                chunk = memoryview(self._chunk_buffer)[:count]

                def read() -> tuple[bytes, memoryview]:
                    read_chunk_into(fd, offset, chunk)
                    return prefix, chunk

                await self._send_tls_from_thread(read)
                return
            if self._socket is None:
                data = await trio.to_thread.run_sync(read_chunk, fd, offset, count)
                await self._send_all(prefix + data)
                return
            await self._send_prefix(prefix)
            await self._sendfile(fd, offset, count)

    async def _send_prefix(self, prefix: bytes) -> None:
        # MSG_MORE: the kernel holds the header back to go out with the file bytes
        # that follow, rather than as a tiny segment of its own.
        view = memoryview(prefix)
        try:
            while view:
                sent = await self._socket.send(view, socket.MSG_MORE)
                view = view[sent:]
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection lost") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc.strerror or exc}") from None

    async def _sendfile(self, fd: int, offset: int, count: int) -> None:
        sock = self._socket
        out = sock.fileno()
        sent = 0
        try:
            while sent < count:
                await trio.lowlevel.wait_writable(sock)
                try:
                    n = os.sendfile(out, fd, offset + sent, count - sent)
                except BlockingIOError:
                    continue
                if n == 0:
                    raise StorageError(f"file ended {count - sent} bytes early while sending")
                sent += n
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection lost") from None
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.ENOTCONN):
                raise ConnectionClosed(f"connection lost: {exc.strerror}") from None
            raise StorageError(f"sendfile failed: {exc.strerror or exc}") from None

    async def _send_tls_from_thread(self, produce: Callable[[], tuple[bytes, memoryview]]) -> None:
        assert self._tls is not None
        try:
            await self._tls.send_from_thread(produce)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection lost") from None

    async def _send_all(self, data: bytes) -> None:
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionClosed("connection lost") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection lost: {exc.strerror or exc}") from None

    # -- closing -------------------------------------------------------------
    async def send_eof(self) -> bool:
        """End our side of the stream, leaving the other's open, if the stream can (not TLS): True if it did."""
        stream = self.stream
        if not isinstance(stream, trio.abc.HalfCloseableStream):
            return False
        try:
            async with self._send_lock:
                await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise ConnectionClosed("connection lost") from None
        return True

    async def aclose(self) -> None:
        """Close the stream, bounded: forcefully if a graceful close would block."""
        if self.closed:
            return
        self.closed = True
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self.stream)
