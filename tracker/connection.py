"""One connection to the tracker: its read loop, batched replies, flow control, idle timeout and farewell.

:func:`serve_connection` runs a :class:`Connection` over any ``trio.abc.Stream``
(memory streams in tests, a socket with ``io="streams"``) through
``receive_some`` and ``send_all``; ``tracker.hub`` subclasses it for sockets
served through the readiness hub. It reads, feeds the codec, drains every
complete request, answers them in order (``tracker.handlers``) and sends the
answers of one read in a single write: pipelined clients then cost one write
per batch, not one per request.

Errors are sorted once, at this boundary, and stay with their connection:

* a request the registry refuses (``TrackerError``) gets an ERROR reply and
  the connection stays open;
* a protocol violation (``RemoteProtocolError`` from the codec, a request
  before HELLO, a message a tracker does not answer) gets an ERROR frame with
  the reason, then the connection is closed and the reason logged;
* trio's stream errors become ``ConnectionClosed``, an idle connection
  ``PeerTimeout``; both just end that connection;
* anything else is a bug of ours: logged whole (an exception group with every
  member), an ERROR frame, the connection closed, the others served on.

A dropped connection does not drop the peer: peers are keyed by id and expire
only when silent for ``peer_timeout`` (``TrackerService.expiry_loop``); unless
the connection agreed on ``withdraw`` and registered the peer, which binds the
registration to the connection: however the connection ends, its task drops
the peer before anything else (:meth:`Connection.release`, PROTOCOL.md §8.5).
"""

from __future__ import annotations

import ipaddress
import logging
from time import perf_counter
from typing import TYPE_CHECKING, Final, cast

import attrs
import trio

from common.address import format_address, ip_group
from common.codec import CLOSED, NEED_DATA, Codec, LargeFrame, Sentinel, decode_payload, encode_message
from common.errors import ConnectionClosed, PeerTimeout, RemoteProtocolError, TrackerError
from common.framing import ErrorCode
from common.handshake import Agreement, ServerHandshake
from common.messages import Error, Message, Publish
from tracker import staging
from tracker.greeting import GREETING
from tracker.handlers import Handlers, refusal, unexpected
from tracker.staging import Staged

if TYPE_CHECKING:
    from common.swarm import Membership
    from tracker.service import TrackerService

__all__ = ["Connection", "serve_connection", "observed_host", "Buffer", "RECEIVE_SIZE"]

log = logging.getLogger(__name__)

#: Bytes asked of the stream per read: a batch of pipelined requests fits.
RECEIVE_SIZE: Final = 16 * 1024
#: Replies of one batch are sent as soon as they reach this size, so a client
#: that pipelines thousands of WHO_HAS (8 KiB answers to 44-byte questions)
#: cannot make the tracker hold megabytes for it.
FLUSH_SIZE: Final = 32 * 1024
#: How long a parting ERROR frame may take to go out before the connection is dropped anyway.
FAREWELL_TIMEOUT: Final = 1.0
#: Seconds of answering after which a connection lets the others run, however much
#: it has pipelined: a request costs microseconds to a few milliseconds (a LOOKUP of
#: a short id prefix), so no client holds the event loop much longer than this.
ANSWER_BUDGET: Final = 0.005
#: ``Connection.answer_ready`` stopped because its replies reached FLUSH_SIZE, or it used its ANSWER_BUDGET.
_FLUSH: Final = Sentinel("FLUSH")

#: Bytes to send: replies, or what the socket has not taken of them yet.
Buffer = bytes | memoryview


def observed_host(host: str) -> str:
    """The canonical text of an address as seen on a socket (IPv4-mapped IPv6 shown as IPv4)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


async def serve_connection(
    service: TrackerService, stream: trio.abc.Stream, remote: tuple[str, int], kind: type[Connection]
) -> None:
    """Serve one connection of ``kind`` from ``remote`` until it closes, misbehaves or idles; always closes ``stream``."""
    host, port = observed_host(remote[0]), remote[1]
    # The address is formatted for a log line only: kept for the connection's life, its text was 128 bytes per idle connection.
    network = ip_group(host)
    full = _full(service, network)
    if full:
        log.warning("refusing %s: %s", format_address(host, port), full)
        try:
            await _farewell(stream, Error(ErrorCode.TOO_MANY_CONNECTIONS, f"{full}; retry later"))
        finally:
            await trio.aclose_forcefully(stream)
        return
    service.connections += 1
    service.connections_per_network.add(network)
    connection = kind(service, stream, host, port)
    try:
        try:
            await connection.run()
        finally:
            connection.release()  # at once, before any farewell: on every path, in this task
    except RemoteProtocolError as exc:
        log.warning("closing %s: %s", format_address(host, port), exc.reason)
        code = exc.error_code if exc.error_code is not None else ErrorCode.BAD_REQUEST
        await _farewell(stream, Error(code, exc.reason[:1024]), connection.pending)
    except PeerTimeout:
        log.debug("closing %s: idle for %gs", format_address(host, port), service.config.idle_timeout)
        await _farewell(stream, Error(ErrorCode.TIMEOUT, f"idle for {service.config.idle_timeout:g}s"))
    except ConnectionClosed:
        log.debug("%s went away", format_address(host, port))
    except Exception:
        # A bug on our side: log it whole (an ExceptionGroup with every member and
        # its traceback), drop this connection, keep serving the rest.
        log.exception("internal error on the connection from %s", format_address(host, port))
        await _farewell(stream, Error(ErrorCode.INTERNAL, "internal tracker error"))
    finally:
        service.connections -= 1
        service.connections_per_network.remove(network)
        service.buffered -= connection.reserved
        await trio.aclose_forcefully(stream)


def _full(service: TrackerService, network: str) -> str:
    """Why a connection from ``network`` is refused (its cap, or the tracker's), or "" when there is room."""
    config = service.config
    if service.connections >= config.max_connections:
        return f"the tracker is at its limit of {config.max_connections} connections"
    if service.connections_per_network.get(network) >= config.max_connections_per_ip:
        return f"{network} has {config.max_connections_per_ip} connections open, the most one address may"
    return ""


async def _farewell(stream: trio.abc.Stream, error: Error, pending: list[Buffer] | None = None) -> None:
    """Best effort: send the replies already made and a last ERROR frame, within FAREWELL_TIMEOUT."""
    with trio.move_on_after(FAREWELL_TIMEOUT):
        try:
            await stream.send_all(b"".join([*(pending or ()), encode_message(error)]))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@attrs.define(eq=False)
class Connection:
    """One client's connection over a generic stream; :meth:`run` serves it until it ends.

    Subclasses replace the I/O (:meth:`run`'s wait for input, :meth:`_receive`, :meth:`_send`) and nothing else.
    """

    service: TrackerService
    stream: trio.abc.Stream
    host: str
    port: int
    codec: Codec = attrs.field(init=False)
    peer_id: bytes | None = attrs.field(init=False, default=None)
    #: The node id this connection proved (capability identity, PROTOCOL.md §8.6); None: not identified.
    node: bytes | None = attrs.field(init=False, default=None)
    #: The listen port this connection speaks for: its REGISTER's, else its HELLO's (checked for unidentified peers).
    claimed_port: int | None = attrs.field(init=False, default=None)
    #: The handshake, while it waits for IDENTIFY.
    greeting: ServerHandshake | None = attrs.field(init=False, default=None)
    #: What the handshake settled, the capabilities in use included; None before HELLO.
    agreement: Agreement | None = attrs.field(init=False, default=None)
    #: How requests are answered in the connection's current phase (``tracker.handlers``).
    handlers: Handlers = attrs.field(init=False, default=GREETING)
    #: Stands for this connection in the registry: a registration bound to it names
    #: this token, not the connection, which the registry then does not keep alive.
    token: object = attrs.field(init=False, factory=object, repr=False)
    #: In a private swarm, from WELCOME until the proof has passed: the proof under way, and the tables to use then.
    proving: tuple[Membership, Handlers] | None = attrs.field(init=False, default=None)
    #: Whether a REGISTER on this connection bound the peer to it (PROTOCOL.md §8.5).
    bound: bool = attrs.field(init=False, default=False)
    #: Replies made for the current batch but not sent yet.
    pending: list[Buffer] = attrs.field(init=False, factory=list)
    #: This connection's share of ``TrackerService.buffered``.
    reserved: int = attrs.field(init=False, default=0)
    #: Bytes in ``pending``.
    _pending_size: int = attrs.field(init=False, default=0)
    #: PUBLISHes answered in ``pending`` whose manifests are not on disk yet (``tracker.staging``).
    unsaved: list[Staged] = attrs.field(init=False, factory=list)
    #: A request decoded that only the connection's task answers (``Handlers.task``, or a violation).
    _held: Message | LargeFrame | None = attrs.field(init=False, default=None)
    #: Whether a request was answered since the idle deadline last moved.
    _answered: bool = attrs.field(init=False, default=False)
    #: When the connection times out unless it completes a request: moved on as requests are answered.
    idle_deadline: float = attrs.field(init=False, default=0.0)
    #: The scope that enforces it on the generic path (:meth:`run`); the hub's connections have none.
    _idle_scope: trio.CancelScope | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        # A large frame (a PUBLISH of a big manifest: up to ~0.7 s to decode) comes out
        # undecoded, and is decoded in a worker thread (_answer_held), not on the event loop.
        self.codec = Codec(max_frame_size=self.service.config.max_frame_size, defer_large=True)

    async def run(self) -> None:
        """Serve requests until the client closes; raises on violations, idleness and lost connections."""
        idle = self.service.config.idle_timeout
        codec = self.codec
        # One scope for the connection's life whose deadline moves on with every
        # answered request: cheaper than a fresh scope around every read.
        self.idle_deadline = trio.current_time() + idle
        self._idle_scope = scope = trio.CancelScope(deadline=self.idle_deadline)
        # The loop is here, not in a coroutine of its own: each coroutine waiting is
        # a frame that every idle connection keeps (issue 16). So is every local:
        # the bytes read go to the codec without one.
        with scope:
            while not await self._answer_all():
                codec.receive_data(await self._receive())
        if scope.cancelled_caught:
            raise PeerTimeout(f"no request for {idle:g}s")

    async def _answer_all(self) -> bool:
        """Answer every whole request the codec holds, replies sent in batches; True once the client has closed.

        Yields to the other connections after every flush and every ANSWER_BUDGET
        of work: a pipelined batch of requests answered in this task (each of
        which may yield or not) must not hold the event loop.
        """
        try:
            return await self._answer_batches()
        except Exception:
            await staging.commit(self)  # what was answered is kept (the replies may go out in a farewell)
            raise

    async def _answer_batches(self) -> bool:
        deadline = perf_counter() + ANSWER_BUDGET
        while True:
            if self._held is not None:
                request, self._held = self._held, None
                self.queue(await self._answer_held(request))
            stop = self.answer_ready()
            if isinstance(stop, Publish) and self._pending_size < FLUSH_SIZE and perf_counter() <= deadline:
                continue  # a run of PUBLISHes: their saves are committed together (tracker/staging.py)
            await staging.commit(self)  # before any reply of the batch is sent
            if self.pending:
                await self._send(self.take_pending())
            if stop is NEED_DATA:
                self.after_batch()
                return False
            if stop is CLOSED:
                return True
            if stop is _FLUSH or perf_counter() > deadline:
                # A write that the socket takes at once does not yield: let the
                # other connections run between the flushes of a long pipelined batch.
                await trio.lowlevel.checkpoint()
                deadline = perf_counter() + ANSWER_BUDGET

    def answer_ready(self) -> Message | LargeFrame | Sentinel:
        """Answer the whole requests in the codec into ``pending`` with ``fast`` handlers, synchronously.

        Stops at the end of the input (NEED_DATA or CLOSED), at a request only
        the task answers (kept in ``_held``, and returned), or once replies
        reach FLUSH_SIZE or it has worked for ANSWER_BUDGET (_FLUSH). Safe on
        the hub's fast path: it runs only what ``Handlers.fast`` declares safe there.
        """
        codec = self.codec
        service = self.service
        fast = self.handlers.fast  # a handler that changes the phase is a task one: this stays right
        deadline = perf_counter() + ANSWER_BUDGET
        while True:
            request = codec.next_event()
            # The table first: a sentinel is in no table, so the common case costs one look-up.
            handler = fast.get(type(request))
            if handler is None:
                if isinstance(request, Sentinel):
                    return request
                service.requests += 1
                self._answered = True
                self._held = request
                return request
            service.requests += 1
            self._answered = True
            try:
                reply = handler(self, request)
            except TrackerError as exc:
                reply = refusal(cast(Message, request), exc)
            self.queue(reply)
            if self._pending_size >= FLUSH_SIZE or perf_counter() > deadline:
                return _FLUSH

    async def _answer_held(self, request: Message | LargeFrame) -> bytes:
        if isinstance(request, LargeFrame):
            request = await trio.to_thread.run_sync(decode_payload, request.opcode, request.payload)
        handler = self.handlers.task.get(type(request))
        if handler is None:
            raise unexpected(self, request)
        try:
            return await handler(self, request)
        except TrackerError as exc:
            return refusal(request, exc)

    def release(self) -> None:
        """The connection is over: drop the peer whose registration is still bound to it (PROTOCOL.md §8.5)."""
        if not self.bound:
            return
        assert self.peer_id is not None  # bound by a REGISTER, after HELLO
        peer = self.service.registry.release(self.peer_id, self.token)
        if peer is not None:
            log.info("peer %s at %s left: its connection closed", peer.name, format_address(peer.host, peer.port))

    def queue(self, reply: Buffer) -> None:
        self.pending.append(reply)
        self._pending_size += len(reply)

    def replace(self, index: int, reply: bytes) -> None:
        """Make the reply at ``index`` of ``pending`` (not sent yet) ``reply`` instead."""
        self._pending_size += len(reply) - len(self.pending[index])
        self.pending[index] = reply

    def take_pending(self) -> list[Buffer]:
        """The replies to send, in order: small ones joined, large ones as they are.

        A large reply (a cached manifest of megabytes, shared by every connection
        sending it) is never copied, so a client that asks for it and reads
        slowly costs no memory of its own.
        """
        pending = self.pending
        if len(pending) == 1:
            buffers = [pending[0]]
        else:
            buffers = []
            small: list[Buffer] = []
            for reply in pending:
                if len(reply) < FLUSH_SIZE:
                    small.append(reply)
                    continue
                if small:
                    buffers.append(b"".join(small))
                    small = []
                buffers.append(reply)
            if small:
                buffers.append(b"".join(small))
        pending.clear()
        self._pending_size = 0
        return buffers

    def after_batch(self) -> None:
        """Once the input is answered: account for what is buffered, and move the idle deadline on."""
        self._account()
        if self._answered:
            # "Idle" means no complete request: a trickle of bytes does not keep a
            # connection open. Moving a deadline costs ~2 us, so it only moves
            # once it is 1/16 of the timeout out of date.
            self._answered = False
            idle = self.service.config.idle_timeout
            deadline = trio.current_time() + idle
            if deadline - self.idle_deadline > idle / 16:
                self.idle_deadline = deadline
                if self._idle_scope is not None:
                    self._idle_scope.deadline = deadline

    def _account(self) -> None:
        """Keep the service's total of buffered input; refuse a large frame that would pass ``max_buffered``.

        Without this, connections that each send the header and part of a 16 MiB
        PUBLISH (no registration needed to send bytes) grow the tracker without bound.
        """
        service = self.service
        reserved = self.codec.reserved
        service.buffered += reserved - self.reserved
        self.reserved = reserved
        if service.buffered > service.config.max_buffered and reserved > RECEIVE_SIZE:
            self.codec.discard()  # free it now, not after the parting ERROR has been sent
            raise RemoteProtocolError(
                f"the tracker holds {service.buffered} bytes of unfinished requests; send large requests later",
                error_code=ErrorCode.BUSY,
            )

    # -- the trio boundary: the generic stream path ------------------------------------
    async def _receive(self) -> bytes | bytearray:
        """The next bytes from the client (``b""`` at its end)."""
        try:
            return await self.stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise ConnectionClosed("connection lost") from None

    async def _send(self, buffers: list[Buffer]) -> None:
        # What the client has not taken yet counts against max_unsent until it has:
        # a client that asks faster than it reads holds the tracker's memory.
        service = self.service
        waiting = sum(map(len, buffers))
        service.unsent += waiting
        try:
            for data in buffers:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise ConnectionClosed("connection lost") from None
        finally:
            service.unsent -= waiting
