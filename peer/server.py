"""The chunk server: serves the chunks a peer holds to any peer that asks.

One task per connection (``trio.serve_listeners``), each split in a reader
that queues REQUEST_CHUNKs (bounded; beyond the bound it answers BUSY at
once rather than stalling) and drops CANCEL_CHUNKed ones, and a sender that
answers the queue in order with CHUNK_DATA (file bytes by ``os.sendfile``) or
CHUNK_ERROR. Connections above the cap get an ERROR(BUSY) and are closed;
so are those above the cap per IP (per IPv6 /64). Slots are shared fairly
across addresses: when all are taken, a newcomer from an address holding
fewer of them than another by two or more takes the slot of one of that
other's connections (issue 12, finding 6: one client with dozens of chatty
connections must not lock everyone else out). Past ``upload_slots``
connections, who keeps a slot is the choker's call (``peer/slots.py``:
peers that upload to us, then those that have least, and an optimistic slot
that rotates); a connection made to leave first finishes the chunk it is
sending.
Each handler catches, logs and closes its own connection: neither one bad peer
nor a bug met while serving one takes the server down.
"""

from __future__ import annotations

import logging
import os

import attrs
import trio

from common.address import ip_group
from common.allow import AllowList
from common.capabilities import IDENTITY
from common.codec import Codec
from common.errors import ChunkswarmError, ConnectionClosed, PeerTimeout, RemoteProtocolError, describe, leaves
from common.framing import ErrorCode
from common.handshake import HandshakeState, ServerHandshake
from common.identity import NodeKey
from common.messages import CancelChunk, ChunkError, Error, Hello, Message, RequestChunk, Welcome
from peer.chunk_runs import collect_run, send_run
from peer.connection import Connection
from peer.request_queue import RequestQueue
from peer.secure import CAPABILITIES, Private
from peer.slots import Choker, Claim, Reciprocity
from peer.status import Transfers, describe_remote
from peer.storage.library import Library
from peer.tasks import open_nursery

__all__ = ["ChunkServer"]

logger = logging.getLogger(__name__)

#: The largest frame a downloader has reason to send us: HELLO, REQUEST_CHUNK, CANCEL_CHUNK
#: and an ERROR with its 1,024-character message all fit. Anything larger is refused at its header.
MAX_REQUEST_FRAME = 16 * 1024
#: How long a connection made to leave is read after our end of it, for the downloader to close it (``_linger``).
_LINGER = 10.0
#: The optional features (PROTOCOL.md §8) a chunk server speaks, with their highest versions.
SUPPORTED: dict[str, int] = {IDENTITY: 1}


def _observed_address(conn: Connection) -> tuple[str, int]:
    """Where the peer's connection comes from, as WELCOME reports it (a memory stream has no address)."""
    address = conn.remote_address
    return address if address is not None else ("127.0.0.1", 0)


@attrs.define(eq=False)
class _Slot:
    """One connection's claim on an upload slot: its address group, and the scope that ends it to make room."""

    group: str
    claim: Claim
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    held: bool = False
    #: A chunk is being sent; and the slot went to another peer (the connection ends once that chunk is sent).
    sending: bool = False
    evicted: bool = False


@attrs.define(eq=False)
class ChunkServer:
    """Serves chunks of the files in ``library``."""

    library: Library
    peer_id: bytes
    label: str = ""
    #: The node's key, proven to downloaders that offer ``identity`` (PROTOCOL.md §8.6); None: never identified.
    key: NodeKey | None = None
    max_connections: int = 32
    #: WELCOMEd connections from one IP (one IPv6 /64) at once.
    max_connections_per_ip: int = 16
    max_queued: int = 16
    handshake_timeout: float = 10.0
    #: Connections that have not said HELLO yet, at most: a newcomer beyond it
    #: closes the one that has waited longest. Each holds a descriptor for up to
    #: ``handshake_timeout``, and silent connections must not use up the
    #: descriptors the peer needs for its files; an honest peer says HELLO at
    #: once, so it is the silent ones that go.
    max_handshakes: int = 64
    #: A private swarm's TLS and proof (``peer/secure.py``): only proven members are served. None: open.
    private: Private | None = None
    #: Connections from other addresses are closed at accept (``--allow``).
    allow: AllowList = attrs.field(factory=AllowList)
    #: A connection that sends no request, or does not take our data, for this long is closed.
    idle_timeout: float = 120.0
    transfers: Transfers = attrs.field(factory=Transfers)
    #: Bytes a second sent at most, over all connections (None: no limit): a seeder with little upload capacity.
    upload_rate: float | None = None
    #: Who keeps a slot past ``choker.slots`` connections (``peer/slots.py``); its reciprocity is the node's record
    #: of what each peer uploaded to us.
    choker: Choker = attrs.field(factory=lambda: Choker(slots=8))
    active: int = attrs.field(init=False, default=0)
    #: When the next chunk may start under ``upload_rate``.
    _next_send: float = attrs.field(init=False, default=0.0)
    #: The handshakes under way, oldest first, by the scope that ends one early.
    _greeting: dict[trio.CancelScope, None] = attrs.field(init=False, factory=dict)
    #: The slots held, per address group, oldest first.
    _slots: dict[str, dict[_Slot, None]] = attrs.field(init=False, factory=dict)

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` (0: a free port) and serve forever; started value: the bound address."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        task_status.started((str(sockname[0]), int(sockname[1])))
        await trio.serve_listeners(self.handle_stream, listeners)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until it closes; never raises (but ``Cancelled``), whatever goes wrong."""
        conn = Connection(stream, codec=Codec(max_receive_size=MAX_REQUEST_FRAME))
        if self.allow and not self.allow.admits(_observed_address(conn)[0]):
            logger.warning("refusing %s: outside the allowed address ranges (%s)", describe_remote("", conn.remote_address), self.allow)
            await conn.aclose()
            return
        if self.private is not None:
            try:
                with trio.fail_after(self.handshake_timeout):
                    conn = Connection(await self.private.accept(stream), codec=conn.codec)
            except (ConnectionClosed, trio.TooSlowError, OSError) as exc:
                logger.info("closing %s: %s", describe_remote("", conn.remote_address), exc or "no TLS handshake in time")
                await trio.aclose_forcefully(stream)
                return
        # except*: the reader and the sender may both have failed; each error is said.
        try:
            await self._serve(conn)
        except* ConnectionClosed as closed:
            logger.debug("chunk connection ended: %s", describe(closed))
        except* PeerTimeout as idle:
            logger.info("closing an idle peer connection: %s", describe(idle))
        except* RemoteProtocolError as broken:
            logger.info("closing a peer connection after a protocol error: %s", describe(broken))
            first = next(exc for exc in leaves(broken) if isinstance(exc, RemoteProtocolError))
            await self._try_send_error(conn, first.error_code or ErrorCode.BAD_REQUEST, first.reason)
        except* ChunkswarmError as failed:
            logger.warning("closing a peer connection: %s", describe(failed))
        except* Exception as bug:
            # Neither the peer's doing nor a failure we know: a bug of ours. It is logged whole and
            # ends this one connection; the server goes on serving the others. (Never BaseException:
            # Cancelled and KeyboardInterrupt must pass.)
            errors = leaves(bug)
            remote = describe_remote("", conn.remote_address)
            logger.exception("closing the connection of %s after an internal error", remote, exc_info=errors[0] if len(errors) == 1 else bug)
            await self._try_send_error(conn, ErrorCode.INTERNAL, "internal error")
        finally:
            await conn.aclose()

    async def _serve(self, conn: Connection) -> None:
        host, port = _observed_address(conn)
        slot = _Slot(ip_group(host), Claim(None, trio.current_time()))
        handshake = await self._handshake(conn, slot)
        if handshake is None:
            return
        remote = describe_remote("", (host, port))
        try:
            with slot.scope:
                if handshake.state is HandshakeState.IDENTIFYING:
                    # PROTOCOL.md §8.6: IDENTIFY comes next; a failed proof is a violation (ERROR, close).
                    await self._send(conn, handshake.identify(await conn.receive_within(self.handshake_timeout)))
                assert handshake.agreement is not None  # the handshake is done
                if self.private is not None:  # PROTOCOL.md §8.8: membership proven before a chunk is served
                    await self.private.prove_server(conn, handshake.agreement.hello.peer_id, self.handshake_timeout)
                hello = handshake.agreement.hello
                remote = describe_remote(hello.agent, (host, hello.listen_port or port))
                if handshake.agreement.remote_node is not None:
                    logger.debug("serving %s", describe_remote(hello.agent, (host, hello.listen_port or port), handshake.agreement.remote_node))
                queue = RequestQueue()
                async with open_nursery() as nursery:
                    nursery.start_soon(self._sender, conn, queue, remote, slot)
                    if await self._reader(conn, queue, slot.claim):
                        await queue.drained()
                    nursery.cancel_scope.cancel()
            if slot.scope.cancelled_caught:
                logger.info("closing the connection of %s: its slot goes to another peer (%d of %d slots held from %s)",
                            remote, len(self._slots.get(slot.group, ())), self.max_connections, slot.group)  # fmt: skip
                await self._linger(conn)
        finally:
            self._release(slot)

    def _admit(self, slot: _Slot) -> str | None:
        """Take an upload slot for ``slot`` (making room if another address holds more); the reason to refuse it, if none is given."""
        mine = self._slots.get(slot.group, {})
        if len(mine) >= self.max_connections_per_ip:
            return f"serving {len(mine)} connections from your address already; try later"
        crowded = max(self._slots.values(), key=len, default={})
        fair_share = len(crowded) >= len(mine) + 2  # it may take the slot of a connection from a more crowded address
        if self.active >= self.max_connections:
            if not fair_share:
                return f"serving {self.active} peers already; try later"
            self._evict(next(iter(crowded)))  # its oldest connection
        elif self.choker.contended(self.active):
            now = trio.current_time()
            by_claim = {other.claim: other for other in (crowded if fair_share else (s for group in self._slots.values() for s in group))}
            victim = self.choker.victim(list(by_claim), now)
            if fair_share:  # the address's fair share first, whatever the choker would say
                self._evict(next(iter(crowded)) if victim is None else by_claim[victim])
            elif victim is None or not self.choker.admits(slot.claim, victim, now):
                return f"serving {self.active} peers already; try later"
            else:
                self._evict(by_claim[victim])
        self._slots.setdefault(slot.group, {})[slot] = None
        slot.held = True
        self.active += 1
        return None

    def _evict(self, slot: _Slot) -> None:
        """Give ``slot`` to a newcomer: its connection ends now, or once the chunk it is sending is sent."""
        self._release(slot)
        slot.evicted = True
        if not slot.sending:
            slot.scope.cancel()

    def _release(self, slot: _Slot) -> None:
        if not slot.held:
            return
        slot.held = False
        self.active -= 1
        group = self._slots[slot.group]
        del group[slot]
        if not group:
            del self._slots[slot.group]

    async def _handshake(self, conn: Connection, slot: _Slot) -> ServerHandshake | None:
        """HELLO in, then WELCOME out, or the ERROR that refuses it; the handshake (IDENTIFYING or DONE), or None once refused.

        A WELCOME takes one of the ``max_connections`` slots (``active``, ``slot``), which the caller gives back.
        """
        if len(self._greeting) >= self.max_handshakes:
            next(iter(self._greeting)).cancel()  # the longest silent: it is dropped, not the newcomer
        with trio.CancelScope() as greeting:
            self._greeting[greeting] = None
            try:
                first = await conn.receive_within(self.handshake_timeout)
            finally:
                del self._greeting[greeting]
        if greeting.cancelled_caught:
            logger.info("closing a peer connection that has not said HELLO: %d newer ones are waiting", self.max_handshakes)
            return None
        host, port = _observed_address(conn)
        if isinstance(first, Hello):
            slot.claim.peer = Reciprocity.key(host, first.peer_id)
        private = self.private is not None  # PROTOCOL.md §8.8: swarm required, then proven before anything is served
        supported = {**SUPPORTED, **CAPABILITIES} if private else SUPPORTED
        handshake = ServerHandshake(supported=supported, required=frozenset(CAPABILITIES if private else ()), key=self.key)
        try:
            welcome = handshake.receive(first, Welcome(self.peer_id, observed_host=host, observed_port=port, agent=self.label))
        except RemoteProtocolError as exc:
            logger.info("closing a peer connection: %s", exc.reason)
            await self._send(conn, Error(exc.error_code or ErrorCode.BAD_REQUEST, exc.reason))
            return None
        refused = self._admit(slot)  # no checkpoint between the count and the claim: the caps hold
        if refused is not None:
            await self._send(conn, Error(ErrorCode.BUSY, refused))
            return None
        try:
            await self._send(conn, welcome)
        except BaseException:
            self._release(slot)
            raise
        return handshake

    async def _reader(self, conn: Connection, queue: RequestQueue, claim: Claim) -> bool:
        """Queue the downloader's requests until it says goodbye (False) or stops sending (True).

        A downloader may close its sending side after its last requests: they
        are still answered (the sender's deadlines bound that), as every
        request gets one reply.
        """
        while True:
            with trio.move_on_after(self.idle_timeout) as waited:
                try:
                    message = await conn.receive()
                except ConnectionClosed:
                    return True  # at the end of the stream; if the connection broke, the sender finds out
            if waited.cancelled_caught:
                if queue or queue.sending:
                    continue  # the downloader is waiting for us, not idle
                # Said only here: after a send that timed out, a frame may be cut short.
                reason = f"no request within {self.idle_timeout:g} s"
                await self._try_send_error(conn, ErrorCode.TIMEOUT, reason)
                raise PeerTimeout(reason)
            if isinstance(message, RequestChunk):
                claim.last_request = trio.current_time()
                if len(queue) >= self.max_queued:
                    await self._send(conn, ChunkError(message.file_id, message.index, ErrorCode.BUSY, "request queue full"))
                else:
                    queue.put((message.file_id, message.index))
            elif isinstance(message, CancelChunk):
                queue.discard((message.file_id, message.index))
            elif isinstance(message, Error):
                logger.debug("peer sent ERROR %s: %s", message.code_name, message.message)
                return False
            else:
                logger.info("closing a peer connection: unexpected %s", type(message).__name__)
                await self._send(conn, Error(ErrorCode.BAD_REQUEST, f"unexpected {type(message).__name__} on a chunk connection"))
                return False

    async def _sender(self, conn: Connection, queue: RequestQueue, remote: str, slot: _Slot) -> None:
        while True:
            slot.sending = slot.claim.asking = False
            if slot.evicted:
                slot.scope.cancel()  # its slot went to another peer while a chunk was on its way
            file_id, index = await queue.get()
            slot.sending = slot.claim.asking = True
            # Small chunks: this one and those queued behind it, one read call, one write (paced ones leave one by one).
            run = collect_run(self.library, (file_id, index), queue, conn.codec) if self.upload_rate is None else None
            if run is not None:
                try:
                    with trio.fail_after(self.idle_timeout):
                        await send_run(conn, run)
                except trio.TooSlowError:
                    raise PeerTimeout(f"chunks took over {self.idle_timeout:g} s to send") from None
                finally:
                    run.close()
                for length in run.lengths:
                    self.transfers.record_upload(remote, length)
                slot.claim.sent += run.nbytes
                continue
            held = self.library.get(file_id)
            if held is None:
                await self._send(conn, ChunkError(file_id, index, ErrorCode.NOT_HELD, "file not held"))
                continue
            manifest = held.manifest
            if index >= manifest.chunk_count:
                await self._send(conn, ChunkError(file_id, index, ErrorCode.BAD_REQUEST, f"file has {manifest.chunk_count} chunks"))
                continue
            if not held.offers(index):
                await self._send(conn, ChunkError(file_id, index, ErrorCode.NOT_HELD, "chunk not held"))
                continue
            length = manifest.chunk_length(index)
            await self._pace(length)
            prefix = conn.codec.chunk_data_prefix(file_id, index, length)
            # A descriptor of our own for the send: the library closes its own when the
            # file is removed or published again, and while we wait for the socket that
            # number could come to name another file, whose bytes we would then send.
            fd = os.dup(held.fd)
            try:
                with trio.fail_after(self.idle_timeout):  # a downloader that stops reading must not hold a slot forever
                    await conn.send_file_range(prefix, fd, manifest.chunk_offset(index), length)
            except trio.TooSlowError:
                raise PeerTimeout(f"a chunk took over {self.idle_timeout:g} s to send") from None
            finally:
                os.close(fd)
            self.transfers.record_upload(remote, length)
            slot.claim.sent += length

    async def _pace(self, nbytes: int) -> None:
        """Wait for this chunk's turn under ``upload_rate``: chunks leave one after another, each taking ``nbytes / rate`` seconds.

        Meanwhile requests queue up and, past ``max_queued``, are answered BUSY,
        so downloaders ask someone else (each other) as they would a slow seeder.
        """
        if self.upload_rate is None:
            return
        start = max(trio.current_time(), self._next_send)
        self._next_send = start + nbytes / self.upload_rate
        await trio.sleep_until(start)

    async def _send(self, conn: Connection, message: Message) -> None:
        """Send ``message``; a downloader that does not take it within the idle timeout is dropped."""
        try:
            with trio.fail_after(self.idle_timeout):
                await conn.send(message)
        except trio.TooSlowError:
            raise PeerTimeout(f"the other side took nothing for {self.idle_timeout:g} s") from None

    @staticmethod
    async def _linger(conn: Connection) -> None:
        """End our side, then read (and drop) what the downloader still sends until it closes, for at most ``_LINGER``.

        A socket closed with requests unread in it is reset, and a reset makes
        the downloader drop the chunks already sent, still in its receive
        buffer: at 16 downloaders on one host, 2% of the bytes sent were lost so.
        """
        with trio.move_on_after(_LINGER):
            try:
                if await conn.send_eof():
                    while True:
                        await conn.receive()
            except (ConnectionClosed, RemoteProtocolError):
                pass

    @staticmethod
    async def _try_send_error(conn: Connection, code: int, text: str) -> None:
        with trio.move_on_after(1):
            try:
                await conn.send(Error(code, text[:1000]))
            except ChunkswarmError:
                pass
