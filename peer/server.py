"""The chunk server: serves the chunks a peer holds to any peer that asks.

One task per connection (``trio.serve_listeners``), each split in a reader
that queues REQUEST_CHUNKs (bounded; beyond the bound it answers BUSY at
once rather than stalling) and drops CANCEL_CHUNKed ones, and a sender that
answers the queue in order with CHUNK_DATA (file bytes by ``os.sendfile``) or
CHUNK_ERROR. Connections above the cap get an ERROR(BUSY) and are closed.
Each handler catches, logs and closes its own connection: one bad peer never
takes the server down.
"""

from __future__ import annotations

import collections
import logging

import attrs
import trio

from common.codec import Codec
from common.errors import ChunkswarmError, ConnectionClosed, PeerTimeout, RemoteProtocolError
from common.framing import ErrorCode
from common.messages import CancelChunk, ChunkError, Error, Hello, RequestChunk, Welcome
from peer.connection import Connection
from peer.status import Transfers, describe_remote
from peer.storage import Library
from peer.tasks import open_nursery

__all__ = ["ChunkServer"]

logger = logging.getLogger(__name__)

#: The largest frame a downloader has reason to send us: HELLO, REQUEST_CHUNK, CANCEL_CHUNK
#: and an ERROR with its 1,024-character message all fit. Anything larger is refused at its header.
MAX_REQUEST_FRAME = 16 * 1024


class _RequestQueue:
    """Queued (file id, index) requests of one connection, in arrival order, cancellable."""

    def __init__(self) -> None:
        self._items: collections.OrderedDict[tuple[bytes, int], None] = collections.OrderedDict()
        self._wakeup = trio.Event()
        #: True while the sender is answering a request taken from the queue.
        self.sending = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: tuple[bytes, int]) -> None:
        self._items[key] = None
        self._wakeup.set()

    def discard(self, key: tuple[bytes, int]) -> None:
        self._items.pop(key, None)

    async def get(self) -> tuple[bytes, int]:
        while not self._items:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        key, _ = self._items.popitem(last=False)
        return key


@attrs.define(eq=False)
class ChunkServer:
    """Serves chunks of the files in ``library``."""

    library: Library
    peer_id: bytes
    label: str = ""
    max_connections: int = 32
    max_queued: int = 16
    handshake_timeout: float = 10.0
    #: A connection that sends no request, or does not take our data, for this long is closed.
    idle_timeout: float = 120.0
    transfers: Transfers = attrs.field(factory=Transfers)
    active: int = attrs.field(init=False, default=0)

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` (0: a free port) and serve forever; started value: the bound address."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        task_status.started((str(sockname[0]), int(sockname[1])))
        await trio.serve_listeners(self.handle_stream, listeners)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes; never raises (except Cancelled)."""
        conn = Connection(stream, codec=Codec(max_receive_size=MAX_REQUEST_FRAME))
        try:
            await self._serve(conn)
        except ConnectionClosed as exc:
            logger.debug("chunk connection ended: %s", exc)
        except PeerTimeout as exc:
            logger.info("closing an idle peer connection: %s", exc)
        except RemoteProtocolError as exc:
            logger.info("closing a peer connection after a protocol error: %s", exc)
            await self._try_send_error(conn, exc.error_code or ErrorCode.BAD_REQUEST, exc.reason)
        except ChunkswarmError as exc:
            logger.warning("closing a peer connection: %s", exc)
        finally:
            await conn.aclose()

    async def _serve(self, conn: Connection) -> None:
        hello = await conn.receive_within(self.handshake_timeout)
        if not isinstance(hello, Hello):
            logger.info("closing a peer connection: %s before HELLO", type(hello).__name__)
            await conn.send(Error(ErrorCode.BAD_REQUEST, "expected HELLO"))
            return
        if self.active >= self.max_connections:
            await conn.send(Error(ErrorCode.BUSY, f"serving {self.active} peers already; try later"))
            return
        self.active += 1
        try:
            address = conn.remote_address
            host, port = address if address is not None else ("127.0.0.1", 0)
            await conn.send(Welcome(self.peer_id, observed_host=host, observed_port=port, agent=self.label))
            remote = describe_remote(hello.agent, (host, hello.listen_port or port))
            queue = _RequestQueue()
            async with open_nursery() as nursery:
                nursery.start_soon(self._sender, conn, queue, remote)
                await self._reader(conn, queue)
                nursery.cancel_scope.cancel()
        finally:
            self.active -= 1

    async def _reader(self, conn: Connection, queue: _RequestQueue) -> None:
        while True:
            with trio.move_on_after(self.idle_timeout) as waited:
                message = await conn.receive()
            if waited.cancelled_caught:
                if queue or queue.sending:
                    continue  # the downloader is waiting for us, not idle
                raise PeerTimeout(f"no request within {self.idle_timeout:g} s")
            if isinstance(message, RequestChunk):
                if len(queue) >= self.max_queued:
                    await conn.send(ChunkError(message.file_id, message.index, ErrorCode.BUSY, "request queue full"))
                else:
                    queue.put((message.file_id, message.index))
            elif isinstance(message, CancelChunk):
                queue.discard((message.file_id, message.index))
            elif isinstance(message, Error):
                logger.debug("peer sent ERROR %s: %s", message.code_name, message.message)
                return
            else:
                logger.info("closing a peer connection: unexpected %s", type(message).__name__)
                await conn.send(Error(ErrorCode.BAD_REQUEST, f"unexpected {type(message).__name__} on a chunk connection"))
                return

    async def _sender(self, conn: Connection, queue: _RequestQueue, remote: str) -> None:
        while True:
            queue.sending = False
            file_id, index = await queue.get()
            queue.sending = True
            held = self.library.get(file_id)
            if held is None:
                await conn.send(ChunkError(file_id, index, ErrorCode.NOT_HELD, "file not held"))
                continue
            manifest = held.manifest
            if index >= manifest.chunk_count:
                await conn.send(ChunkError(file_id, index, ErrorCode.BAD_REQUEST, f"file has {manifest.chunk_count} chunks"))
                continue
            if not held.offers(index):
                await conn.send(ChunkError(file_id, index, ErrorCode.NOT_HELD, "chunk not held"))
                continue
            length = manifest.chunk_length(index)
            prefix = conn.codec.chunk_data_prefix(file_id, index, length)
            try:
                with trio.fail_after(self.idle_timeout):  # a downloader that stops reading must not hold a slot forever
                    await conn.send_file_range(prefix, held.fd, manifest.chunk_offset(index), length)
            except trio.TooSlowError:
                raise PeerTimeout(f"a chunk took over {self.idle_timeout:g} s to send") from None
            self.transfers.record_upload(remote, length)

    @staticmethod
    async def _try_send_error(conn: Connection, code: int, text: str) -> None:
        with trio.move_on_after(1):
            try:
                await conn.send(Error(code, text[:1000]))
            except ChunkswarmError:
                pass
