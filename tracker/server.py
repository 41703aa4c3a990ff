"""The tracker's trio shell: one task per connection around a sans-I/O codec and the pure registry.

Each connection runs :meth:`TrackerService.handle_stream` over any
``trio.abc.Stream`` (tests hand it memory streams). It reads, feeds the codec,
drains every complete request, answers them in order and sends the answers of
one read in a single write (pipelined clients then cost one write per batch,
not one per request). On real sockets a :class:`ReadinessHub` does that for a
connection whose task is waiting, without waking it, and hands over to the
task whatever must wait.

Errors are sorted once, at this boundary:

* a request the registry refuses (``TrackerError``) gets an ERROR reply and
  the connection stays open;
* a protocol violation (``RemoteProtocolError`` from the codec, a request
  before HELLO, a message a tracker does not answer) gets an ERROR frame with
  the reason, then the connection is closed and the reason logged;
* trio's stream errors become ``ConnectionClosed``, an idle connection
  ``PeerTimeout``; both just end that connection.

A dropped connection does not drop the peer: peers are keyed by id and expire
only when silent for ``peer_timeout`` (the expiry sweep task).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import select
from collections.abc import Awaitable, Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any, Final

import attrs
import outcome
import trio

from common.address import format_address
from common.codec import CLOSED, NEED_DATA, Codec, Sentinel, encode_message
from common.errors import (
    ConnectionClosed,
    PeerTimeout,
    RemoteProtocolError,
    StorageError,
    TrackerError,
)
from common.framing import PROTOCOL_VERSION, ErrorCode
from common.manifest import Manifest
from common.messages import (
    PEER_ID_SIZE,
    Announce,
    Deregister,
    Error,
    GetManifest,
    Heartbeat,
    Hello,
    ListFiles,
    ManifestReply,
    Message,
    Ok,
    Publish,
    Published,
    Register,
    Stats,
    StatsReply,
    Welcome,
    WhoHas,
)
from common.version import __version__
from tracker.config import TrackerConfig
from tracker.registry import FileRecord, Registry, check_manifest
from tracker.replies import FILE_LIST_OVERHEAD, encode_file_list, encode_holders, file_entry, holder_entry
from tracker.store import Store

__all__ = ["serve_tracker", "RunningTracker", "TrackerService"]

log = logging.getLogger(__name__)

AGENT: Final = f"chunkswarm-tracker/{__version__}"
#: Bytes asked of the socket per read: a batch of pipelined requests fits.
RECEIVE_SIZE: Final = 16 * 1024
#: Replies of one batch are sent as soon as they reach this size, so a client
#: that pipelines thousands of WHO_HAS (8 KiB answers to 44-byte questions)
#: cannot make the tracker hold megabytes for it.
FLUSH_SIZE: Final = 32 * 1024
#: Readiness events the hub takes from its epoll at a time (more stay for the next
#: poll) and answers before the other tasks run again. A read full of pipelined
#: small requests takes about a millisecond to answer, so under a flood the other
#: tasks (timers, handed-over connections) wait at most ~64 ms.
HUB_EVENTS: Final = 64
#: How long a parting ERROR frame may take to go out before the connection is dropped anyway.
FAREWELL_TIMEOUT: Final = 1.0
#: A listing yields to the other connections after every this many files: an
#: entry costs ~3 us to build and pack, so a slice holds the loop ~3 ms.
LIST_SLICE: Final = 1000
#: Manifests at most this many chunks are checked on the event loop: the Merkle
#: root of 256 chunks is ~512 SHA-256 of 64 bytes, well under a millisecond.
INLINE_CHECK_CHUNKS: Final = 256

#: Bytes to send: replies, or what the socket has not taken of them yet.
Buffer = bytes | memoryview

_OK_FRAME: Final = encode_message(Ok())
#: Events after which a short read does not mean the socket is empty: the client
#: closed its end (the end of the stream is still to be read), the socket failed,
#: or urgent data came (a read stops at the urgent mark).
_READ_ON: Final = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR | select.EPOLLPRI
#: ``_Connection._answer_ready`` stopped because its replies reached FLUSH_SIZE.
_FLUSH: Final = Sentinel("FLUSH")
#: The hub's fast path wakes a connection's task with this: carry on from what the codec, ``pending`` and ``_held`` hold.
_HANDED_OVER: Final = Sentinel("HANDED_OVER")


def _fill_entry(record: FileRecord, slot: int) -> bytes:
    entry = record.entries[slot] = holder_entry(record.replicas[slot])
    return entry


def _observed_host(host: str) -> str:
    """The canonical text of an address as seen on a socket (IPv4-mapped IPv6 shown as IPv4)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# ---------------------------------------------------------------------------
# Readiness of many sockets through one edge-triggered epoll
# ---------------------------------------------------------------------------
class ReadinessHub:
    """Serves many sockets from one edge-triggered epoll, answering what it can without waking their tasks.

    ``trio.lowlevel.wait_readable`` registers the socket with EPOLLONESHOT, so
    every wait costs an ``epoll_ctl`` and trio rebuilds its bookkeeping for the
    descriptor. Here each socket is registered once, edge-triggered, in a
    separate epoll whose own descriptor one task (:meth:`run`) waits on through
    trio.

    When a socket with a parked task becomes readable, the hub calls the
    socket's ``on_ready`` in its own task step. That callback (a connection's
    fast path: read, answer, write) returns None when it has done everything
    and the task may stay parked, or a value the parked task is woken with;
    an exception it raises is thrown into the parked task instead, so the
    connection's own task logs it, says goodbye and closes, and the hub serves
    on. Waking a task through trio's scheduler costs about as much as
    answering a typical request: at 20,000 requests/s (bench/tracker.py) the
    fast path took the tracker's CPU from about 44 to 36 us per request. Each
    connection still has its own task, which owns its lifetime, its idle
    timeout and everything that must wait (a PUBLISH committed in a worker
    thread, a socket buffer that is full).

    Edge-triggered means an event reports data that arrived since the last
    one, so a reader must drain what is there before it waits again (a read
    that fills the caller's buffer may have left more): see
    ``_Connection._receive``. An event for a socket whose task is busy is
    remembered, so its next wait returns at once.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, trio.lowlevel.Task] = {}
        self._on_ready: dict[int, Callable[[], object]] = {}
        #: Sockets that became readable while their task was not parked.
        self._ready: set[int] = set()
        #: Sockets to read until they are empty rather than trusting a short read
        #: (``_READ_ON``). The event that says so may come with the last data, and
        #: edge-triggered it comes once.
        self._read_on: set[int] = set()

    def register(self, fd: int, on_ready: Callable[[], object]) -> None:
        """Watch ``fd``; ``on_ready()`` runs in the hub's task when it is readable while its task waits."""
        # Data that is already there when the socket is added is reported at once.
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLPRI | select.EPOLLET)
        self._on_ready[fd] = on_ready

    def unregister(self, fd: int) -> None:
        """Forget ``fd``; call before the socket is closed, as its number may be reused at once."""
        self._ready.discard(fd)
        self._read_on.discard(fd)
        self._parked.pop(fd, None)
        self._on_ready.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed behind our back: the kernel dropped it
            pass

    def must_read_on(self, fd: int) -> bool:
        """Whether ``fd`` must be read until it is empty, a short read or not (see ``_READ_ON``)."""
        return fd in self._read_on

    async def wait_readable(self, fd: int) -> object:
        """Wait until ``fd`` is readable (returns None) or its ``on_ready`` hands over (returns what it gave)."""
        if fd in self._ready:
            self._ready.discard(fd)
            await trio.lowlevel.checkpoint()  # still a checkpoint: a flooding client cannot starve the rest
            return None
        self._parked[fd] = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            del self._parked[fd]
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        """Dispatch readiness events until cancelled."""
        epoll, parked, ready, on_ready, read_on = self._epoll, self._parked, self._ready, self._on_ready, self._read_on
        reschedule = trio.lowlevel.reschedule
        while True:
            events = epoll.poll(0, HUB_EVENTS)
            if not events:
                await trio.lowlevel.wait_readable(epoll.fileno())
                continue
            for fd, mask in events:
                if mask & _READ_ON:
                    read_on.add(fd)
                task = parked.get(fd)
                if task is None:
                    ready.add(fd)
                    continue
                try:
                    handed_over = on_ready[fd]()
                except Exception as exc:  # the connection's task deals with it: logs, says why, closes
                    del parked[fd]
                    reschedule(task, outcome.Error(exc))
                    continue
                if handed_over is not None:
                    del parked[fd]
                    reschedule(task, outcome.Value(handed_over))
            # Busy: look again after the other tasks have run, without re-arming
            # trio's one-shot registration of the epoll (an epoll_ctl each time).
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Close the epoll, once every connection using the hub has ended."""
        self._epoll.close()


# ---------------------------------------------------------------------------
# The service: shared state of every connection
# ---------------------------------------------------------------------------
@attrs.define(eq=False)
class TrackerService:
    """The registry, the store and the counters that every connection of one tracker shares."""

    config: TrackerConfig
    registry: Registry
    store: Store
    tracker_id: bytes = attrs.field(factory=lambda: os.urandom(PEER_ID_SIZE))
    connections: int = 0
    requests: int = 0
    #: Bytes the codecs of all connections hold for requests still arriving (see ``max_buffered``).
    buffered: int = 0
    #: Bytes of replies waiting for clients that do not read as fast as they ask (see ``max_unsent``).
    unsent: int = 0
    started_at: float = attrs.field(factory=trio.current_time)
    #: Wakes the connections on real sockets; None: each waits through trio (memory streams, no epoll).
    hub: ReadinessHub | None = None

    @classmethod
    def create(cls, config: TrackerConfig, store: Store, catalogue: Iterable[Manifest] = ()) -> TrackerService:
        """A service whose registry lists ``catalogue`` (the manifests read from ``store``)."""
        registry = Registry(config.peer_timeout, trio.current_time)
        for manifest in catalogue:
            registry.publish(manifest, checked=True)  # checked before it was written
        return cls(config, registry, store)

    def stats(self) -> dict[str, int | float]:
        counters: dict[str, int | float] = dict(self.registry.counts())
        counters["connections"] = self.connections
        counters["requests"] = self.requests
        counters["uptime_s"] = round(trio.current_time() - self.started_at, 3)
        return counters

    async def handle_stream(self, stream: trio.abc.Stream, remote: tuple[str, int]) -> None:
        """Serve one connection from ``remote`` until it closes, misbehaves or idles; always closes ``stream``."""
        host, port = _observed_host(remote[0]), remote[1]
        where = format_address(host, port)
        if self.connections >= self.config.max_connections:
            log.warning("refusing %s: %d connections already open", where, self.connections)
            try:
                await _farewell(stream, Error(ErrorCode.TOO_MANY_CONNECTIONS, "the tracker is at its connection limit; retry later"))
            finally:
                await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        connection = _Connection(self, stream, host, port)
        try:
            await connection.run()
        except RemoteProtocolError as exc:
            log.warning("closing %s: %s", where, exc.reason)
            code = exc.error_code if exc.error_code is not None else ErrorCode.BAD_REQUEST
            await _farewell(stream, Error(code, exc.reason[:1024]), connection.pending)
        except PeerTimeout:
            log.debug("closing %s: idle for %gs", where, self.config.idle_timeout)
            await _farewell(stream, Error(ErrorCode.TIMEOUT, f"idle for {self.config.idle_timeout:g}s"))
        except ConnectionClosed:
            log.debug("%s went away", where)
        except Exception:
            # A bug on our side: log it whole, drop this connection, keep serving the rest.
            log.exception("internal error on the connection from %s", where)
            await _farewell(stream, Error(ErrorCode.INTERNAL, "internal tracker error"))
        finally:
            self.connections -= 1
            self.buffered -= connection.reserved
            await trio.aclose_forcefully(stream)

    async def serve_socket(self, stream: trio.SocketStream) -> None:
        """``trio.serve_listeners`` handler: learn the remote address, then :meth:`handle_stream`."""
        try:
            remote = stream.socket.getpeername()
        except OSError:  # reset before we looked
            await trio.aclose_forcefully(stream)
            return
        await self.handle_stream(stream, (remote[0], remote[1]))

    async def expiry_loop(self) -> None:
        """Drop silent peers, sweeping a few times per ``peer_timeout``."""
        interval = min(self.config.heartbeat_interval, self.config.peer_timeout / 4)
        while True:
            await trio.sleep(interval)
            for peer in self.registry.expire():
                log.info(
                    "peer %s at %s expired (silent for over %gs)",
                    peer.peer_id.hex()[:16], format_address(peer.host, peer.port), self.config.peer_timeout,
                )  # fmt: skip

    async def stats_loop(self) -> None:
        """One stats line in the log every ``stats_interval``."""
        previous = self.requests
        while True:
            await trio.sleep(self.config.stats_interval)
            counters = self.stats()
            log.info(
                "stats: %d peers online, %d files, %d replicas, %d connections, %d requests served (%d in the last %gs)",
                counters["peers"], counters["files"], counters["replicas"], counters["connections"],
                counters["requests"], self.requests - previous, self.config.stats_interval,
            )  # fmt: skip
            previous = self.requests

    def check_and_save(self, manifest: Manifest) -> bool:
        """Blocking: check a new manifest and commit it to the store (run in a worker thread)."""
        check_manifest(manifest)
        return self.store.save(manifest)


def _refusal(request: Message, exc: TrackerError) -> bytes:
    """The ERROR reply to a request the registry refused; the connection stays open."""
    log.debug("%s refused: %s", request.OPCODE.name, exc)
    return encode_message(Error(exc.code or ErrorCode.BAD_REQUEST, str(exc)[:1024]))


async def _farewell(stream: trio.abc.Stream, error: Error, pending: list[Buffer] | None = None) -> None:
    """Best effort: send the replies already made and a last ERROR frame, within FAREWELL_TIMEOUT."""
    with trio.move_on_after(FAREWELL_TIMEOUT):
        try:
            await stream.send_all(b"".join([*(pending or ()), encode_message(error)]))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


# ---------------------------------------------------------------------------
# One connection
# ---------------------------------------------------------------------------
@attrs.define(eq=False)
class _Connection:
    service: TrackerService
    stream: trio.abc.Stream
    host: str
    port: int
    codec: Codec = attrs.field(init=False)
    peer_id: bytes | None = attrs.field(init=False, default=None)
    #: Replies made for the current batch but not sent yet.
    pending: list[Buffer] = attrs.field(init=False, factory=list)
    #: This connection's share of ``TrackerService.buffered``.
    reserved: int = attrs.field(init=False, default=0)
    #: How each request is answered: ``_GREETING`` before HELLO, ``_REQUESTS`` after.
    _handlers: Mapping[type, Callable[[Any, Any], bytes]] = attrs.field(init=False)
    #: How requests whose answer must wait are answered: ``_WAITING_REQUESTS`` after HELLO.
    _waiting_handlers: Mapping[type, Callable[[Any, Any], Awaitable[bytes]]] = attrs.field(init=False, factory=dict)
    #: The descriptor of the socket under a ``trio.SocketStream``, read and written
    #: directly (see ``_receive``); -1 for other streams. Kept rather than asked for
    #: each time: ``handle_stream`` closes the stream only after ``run`` returns, so
    #: the number cannot be reused by another connection while this one uses it.
    _fd: int = attrs.field(init=False, default=-1)
    #: Whether the last read may have left data in the socket (see ``_drained``), so
    #: the next read must not wait for a readiness event: the hub reports only new data.
    _unread: bool = attrs.field(init=False, default=True)
    #: Bytes in ``pending``.
    _pending_size: int = attrs.field(init=False, default=0)
    #: A request decoded whose answer must wait (see ``_waiting_handlers``), for the task.
    _held: Message | None = attrs.field(init=False, default=None)
    #: Whether a request was answered since the idle deadline last moved.
    _answered: bool = attrs.field(init=False, default=False)
    #: The scope whose deadline is the idle timeout, moved on as requests are answered.
    _idle_scope: trio.CancelScope = attrs.field(init=False, factory=trio.CancelScope)

    def __attrs_post_init__(self) -> None:
        self.codec = Codec(max_frame_size=self.service.config.max_frame_size)
        self._handlers = _GREETING
        if isinstance(self.stream, trio.SocketStream):
            self._fd = self.stream.socket.fileno()

    async def run(self) -> None:
        """Serve requests until the client closes; raises on violations, idleness and lost connections."""
        hub = self.service.hub
        if hub is None or self._fd < 0:
            await self._run()
            return
        hub.register(self._fd, self._serve_ready)
        try:
            await self._run()
        finally:
            hub.unregister(self._fd)

    async def _run(self) -> None:
        idle = self.service.config.idle_timeout
        # One scope for the connection's life whose deadline moves on with every
        # answered request: cheaper than a fresh scope around every read.
        self._idle_scope.deadline = trio.current_time() + idle
        with self._idle_scope:
            await self._serve()
        if self._idle_scope.cancelled_caught:
            raise PeerTimeout(f"no request for {idle:g}s")

    async def _serve(self) -> None:
        codec = self.codec
        while not await self._answer_all():
            data = await self._receive()
            if data is not None:  # None: the hub's fast path has fed the codec
                codec.receive_data(data)

    async def _answer_all(self) -> bool:
        """Answer every whole request the codec holds, replies sent in batches; True once the client has closed."""
        while True:
            if self._held is not None:
                request, self._held = self._held, None
                self._queue(await self._answer_held(request))
            stop = self._answer_ready()
            if self.pending:
                await self._send(self._take_pending())
            if stop is NEED_DATA:
                self._after_batch()
                return False
            if stop is CLOSED:
                return True
            if stop is _FLUSH:
                # The direct write does not yield: let the other connections
                # run between the flushes of a long pipelined batch.
                await trio.lowlevel.checkpoint()

    def _serve_ready(self) -> object:
        """The hub's fast path (see ReadinessHub): read what arrived, answer it and write the replies, without the task.

        Returns None once everything is answered and written; otherwise
        ``_HANDED_OVER``, and the woken task carries on from the codec,
        ``pending`` and ``_held``: the socket may hold more (see ``_drained``),
        the stream has ended, a request must wait (a PUBLISH for the store, a
        listing), replies reached FLUSH_SIZE, or the socket did not take them all.
        Exceptions reach the task, which closes the connection as it would its own.
        """
        try:
            data = os.read(self._fd, RECEIVE_SIZE)
        except BlockingIOError:  # a stale event: nothing after all
            return None
        except OSError:
            raise ConnectionClosed("connection lost") from None
        self.codec.receive_data(data)
        if not data or not self._drained(data):
            self._unread = bool(data)
            return _HANDED_OVER
        stop = self._answer_ready()
        if self.pending:
            left = self._write(self._take_pending())
            if left:
                for rest in left:
                    self._queue(rest)
                return _HANDED_OVER
        if stop is not NEED_DATA:
            return _HANDED_OVER
        self._after_batch()
        return None

    def _answer_ready(self) -> Message | Sentinel:
        """Answer the whole requests in the codec into ``pending``, synchronously.

        Stops at the end of the input (NEED_DATA or CLOSED), at a request whose
        answer must wait (kept in ``_held``), or once replies reach FLUSH_SIZE
        (``_FLUSH``).
        """
        codec = self.codec
        service = self.service
        while True:
            request = codec.next_event()
            if request is NEED_DATA or request is CLOSED:
                return request
            service.requests += 1
            self._answered = True
            if type(request) in self._waiting_handlers:
                self._held = request
                return request
            self._queue(self._answer(request))
            if self._pending_size >= FLUSH_SIZE:
                return _FLUSH

    def _queue(self, reply: Buffer) -> None:
        self.pending.append(reply)
        self._pending_size += len(reply)

    def _take_pending(self) -> list[Buffer]:
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

    def _after_batch(self) -> None:
        """Once the input is answered: account for what is buffered, and move the idle deadline on."""
        self._account()
        if self._answered:
            # "Idle" means no complete request: a trickle of bytes does not keep a
            # connection open. Moving a deadline costs ~2 us, so it only moves
            # once it is 1/16 of the timeout out of date.
            self._answered = False
            idle = self.service.config.idle_timeout
            deadline = trio.current_time() + idle
            if deadline - self._idle_scope.deadline > idle / 16:
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

    def _answer(self, request: Message) -> bytes:
        handler = self._handlers.get(type(request))
        if handler is None:
            if type(request) is Hello:
                raise RemoteProtocolError("HELLO sent twice", error_code=ErrorCode.BAD_REQUEST)
            if self.peer_id is None:
                raise RemoteProtocolError(f"{request.OPCODE.name} before HELLO", error_code=ErrorCode.BAD_REQUEST)
            raise RemoteProtocolError(f"{request.OPCODE.name} is not a tracker request", error_code=ErrorCode.BAD_REQUEST)
        try:
            return handler(self, request)
        except TrackerError as exc:
            return _refusal(request, exc)

    async def _answer_held(self, request: Message) -> bytes:
        try:
            return await self._waiting_handlers[type(request)](self, request)
        except TrackerError as exc:
            return _refusal(request, exc)

    # -- trio boundary -----------------------------------------------------------
    # A request/reply client (one request in flight) leaves the socket empty after
    # every reply, so ``receive_some`` (``recv`` first, then wait on EAGAIN) wastes
    # a syscall per request, and ``send_all`` goes through trio's conflict
    # detectors and try-then-wait machinery for a write that nearly always fits
    # the socket buffer. On a real socket the tracker therefore waits for
    # readability first and then reads, and writes directly, falling back to
    # ``send_all`` for whatever the kernel did not take. Every read is a
    # checkpoint, waiting or not, so the connection keeps yielding to the
    # others. Memory streams (tests) take the generic path.
    async def _receive(self) -> bytes | None:
        """The next bytes from the client, or None when the hub's fast path has fed them to the codec."""
        fd = self._fd
        try:
            if fd < 0:
                return await self.stream.receive_some(RECEIVE_SIZE)
            hub = self.service.hub
            while True:
                if self._unread:
                    # No wait, but still a checkpoint: a client that keeps the socket
                    # full must not keep every other connection waiting.
                    await trio.lowlevel.checkpoint()
                elif hub is None:
                    await trio.lowlevel.wait_readable(fd)
                elif await hub.wait_readable(fd) is _HANDED_OVER:
                    return None
                try:
                    data = os.read(fd, RECEIVE_SIZE)
                except BlockingIOError:  # nothing after all (a spurious or stale wake-up): wait
                    self._unread = False
                    continue
                self._unread = not self._drained(data)
                return data
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise ConnectionClosed("connection lost") from None

    def _drained(self, data: bytes) -> bool:
        """Whether a read took everything the socket had, so the next must wait for the hub's next event.

        A full read may have left more. So may a short one once the client has
        closed its end (the end of the stream is still to be read) or sent
        urgent data (a read stops at the urgent mark): the hub reports either
        only once, perhaps with the last data.
        """
        if len(data) == RECEIVE_SIZE:
            return False
        hub = self.service.hub
        return hub is None or not hub.must_read_on(self._fd)

    def _write(self, buffers: list[Buffer]) -> list[Buffer]:
        """Write what the socket takes now, in one call; what it did not take, in order."""
        try:
            sent = os.write(self._fd, buffers[0]) if len(buffers) == 1 else os.writev(self._fd, buffers)
        except BlockingIOError:
            sent = 0
        except OSError:
            raise ConnectionClosed("connection lost") from None
        for i, data in enumerate(buffers):
            if sent < len(data):
                return [memoryview(data)[sent:], *buffers[i + 1 :]]  # rare: the socket buffer is full
            sent -= len(data)
        return []

    async def _send(self, buffers: list[Buffer]) -> None:
        if self._fd >= 0:
            buffers = self._write(buffers)
            if not buffers:
                return
        # The client is not reading as fast as it asks: what it has not taken yet
        # counts against max_unsent until it has.
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

    # -- requests --------------------------------------------------------------
    def _hello(self, hello: Hello) -> bytes:
        if hello.protocol_version != PROTOCOL_VERSION:
            raise RemoteProtocolError(
                f"HELLO speaks protocol version {hello.protocol_version}, this tracker speaks {PROTOCOL_VERSION}",
                error_code=ErrorCode.UNSUPPORTED_VERSION,
            )
        self.peer_id = hello.peer_id
        self._handlers = _REQUESTS
        self._waiting_handlers = _WAITING_REQUESTS
        config = self.service.config
        return encode_message(
            Welcome(self.service.tracker_id, config.heartbeat_interval, self.host, self.port, PROTOCOL_VERSION, AGENT)
        )

    @property
    def _peer_id(self) -> bytes:
        assert self.peer_id is not None  # the handlers below exist only after HELLO
        return self.peer_id

    def _register(self, register: Register) -> bytes:
        peer, new = self.service.registry.register(self._peer_id, self.host, register.listen_port)
        if new:
            log.info("peer %s joined, serving at %s", peer.peer_id.hex()[:16], format_address(peer.host, peer.port))
        else:
            log.debug("peer %s registered again at %s", peer.peer_id.hex()[:16], format_address(peer.host, peer.port))
        return _OK_FRAME

    def _heartbeat(self, heartbeat: Heartbeat) -> bytes:
        self.service.registry.peer(self._peer_id, self.host)
        return _OK_FRAME

    def _deregister(self, deregister: Deregister) -> bytes:
        peer = self.service.registry.deregister(self._peer_id, self.host)
        if peer is not None:
            log.info("peer %s at %s left", peer.peer_id.hex()[:16], format_address(peer.host, peer.port))
        return _OK_FRAME

    async def _publish(self, publish: Publish) -> bytes:
        registry = self.service.registry
        manifest = publish.manifest
        try:
            registry.peer(self._peer_id, self.host)
            if not registry.has_file(manifest.file_id):
                # The commit (and the Merkle check of a large manifest) runs in a worker
                # thread; the reply waits for it, so an acknowledged publish is on disk.
                if manifest.chunk_count <= INLINE_CHECK_CHUNKS:
                    check_manifest(manifest)
                    await trio.to_thread.run_sync(self.service.store.save, manifest)
                else:
                    await trio.to_thread.run_sync(self.service.check_and_save, manifest)
                if registry.publish(manifest, checked=True):
                    log.info(
                        "file %r published (%s, %d bytes, %d chunks)",
                        manifest.name, manifest.hex_id[:16], manifest.size, manifest.chunk_count,
                    )  # fmt: skip
        except StorageError as exc:
            log.error("cannot store %r: %s", manifest.name, exc)
            return encode_message(Error(ErrorCode.INTERNAL, "the tracker could not store the manifest"))
        return encode_message(Published(manifest.file_id))

    def _announce(self, announce: Announce) -> bytes:
        registry = self.service.registry
        registry.announce(registry.peer(self._peer_id, self.host), announce.file_id, announce.ranges)
        return _OK_FRAME

    def _get_manifest(self, request: GetManifest) -> bytes:
        # Encoded once per file: a manifest of 2**19 chunks is a 16 MiB frame that
        # takes 30-100 ms to encode, and every connection sending it shares the bytes.
        record = self.service.registry.record(request.file_id)
        if record.manifest_reply is None:
            record.manifest_reply = self.codec.send(ManifestReply(record.manifest))
        return record.manifest_reply

    def _who_has(self, request: WhoHas) -> bytes:
        limit = min(request.max_peers, self.service.config.max_holders)
        record, slots = self.service.registry.holder_slots(request.file_id, limit=limit, exclude=self.peer_id)
        cached = record.entries
        max_frame_size = self.codec.max_frame_size
        if len(slots) > 1:
            # One C call fetches the cached entries. With 100,000 replicas they are
            # scattered across memory and nearly every one is a cache miss, which a
            # comprehension takes one at a time: ~30% slower. None marks a stale entry.
            fetched = itemgetter(*slots)(cached)
            if all(fetched):
                return encode_holders(request.file_id, fetched, max_frame_size=max_frame_size)
        entries = [cached[i] or _fill_entry(record, i) for i in slots]
        return encode_holders(request.file_id, entries, max_frame_size=max_frame_size)

    async def _list_files(self, request: ListFiles) -> bytes:
        service = self.service
        if service.unsent > service.config.max_unsent:
            # A listing can be megabytes built for one request: a crowd of clients that
            # ask and never read must not make the tracker hold gigabytes.
            raise TrackerError(
                f"the tracker holds {service.unsent} bytes of replies its clients have not read; list again later",
                code=ErrorCode.BUSY,
            )
        max_frame_size = self.codec.max_frame_size
        entries: list[bytes] = []
        size = FILE_LIST_OVERHEAD
        for summary in service.registry.iter_files(request.pattern, request.limit):
            entry = file_entry(summary)
            size += len(entry)
            if size > max_frame_size:
                raise TrackerError(f"a listing of more than {len(entries)} files does not fit one frame; ask for fewer", code=ErrorCode.BAD_REQUEST)
            entries.append(entry)
            if len(entries) % LIST_SLICE == 0:
                await trio.lowlevel.checkpoint()
        return encode_file_list(entries, max_frame_size=max_frame_size)

    def _stats(self, request: Stats) -> bytes:
        return self.codec.send(StatsReply(self.service.stats()))


# Plain functions, not a connection's bound methods: a connection that held
# those would refer to itself, and a cycle is freed only by the cyclic
# collector, which never sees the objects the tracker CLI has frozen
# (tracker/cli.py). Reference counting frees a closed connection at once.
_GREETING: Final[Mapping[type, Callable[[Any, Any], bytes]]] = {Hello: _Connection._hello}
_REQUESTS: Final[Mapping[type, Callable[[Any, Any], bytes]]] = {
    Register: _Connection._register,
    Heartbeat: _Connection._heartbeat,
    Deregister: _Connection._deregister,
    Announce: _Connection._announce,
    GetManifest: _Connection._get_manifest,
    WhoHas: _Connection._who_has,
    Stats: _Connection._stats,
}
#: Requests whose answer must wait, in the connection's task: a PUBLISH for the store, a listing for its slices.
_WAITING_REQUESTS: Final[Mapping[type, Callable[[Any, Any], Awaitable[bytes]]]] = {
    Publish: _Connection._publish,
    ListFiles: _Connection._list_files,
}


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------
@attrs.frozen
class RunningTracker:
    """What ``serve_tracker`` hands to ``task_status.started``: where it listens, and its counters."""

    host: str
    port: int
    service: TrackerService = attrs.field(repr=False)

    def stats(self) -> dict[str, int | float]:
        return self.service.stats()


async def serve_tracker(config: TrackerConfig, *, task_status: trio.TaskStatus[RunningTracker] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a tracker until cancelled; ``task_status.started`` gets a :class:`RunningTracker` once bound.

    ``config.host`` of ``"*"`` or ``""`` listens on every interface, IPv4 and IPv6.
    """
    store = await trio.to_thread.run_sync(Store, config.db_path)
    try:
        catalogue = await trio.to_thread.run_sync(lambda: list(store.load()))
        service = TrackerService.create(config, store, catalogue)
        if service.registry.file_count:
            log.info("catalogue of %d files loaded from %s", service.registry.file_count, config.db_path)
        bind_host = None if config.host in ("", "*") else config.host
        listeners = await trio.open_tcp_listeners(config.port, host=bind_host)
        # Linux; elsewhere connections wait through trio.
        service.hub = hub = ReadinessHub() if hasattr(select, "epoll") else None
        try:
            async with trio.open_nursery() as nursery:
                if hub is not None:
                    nursery.start_soon(hub.run)
                nursery.start_soon(service.expiry_loop)
                nursery.start_soon(service.stats_loop)
                await nursery.start(trio.serve_listeners, service.serve_socket, listeners)
                bound = [listener.socket.getsockname() for listener in listeners]
                for address in bound:
                    log.info("tracker listening on %s", format_address(_observed_host(address[0]), address[1]))
                task_status.started(RunningTracker(bound[0][0], bound[0][1], service))
        finally:
            if hub is not None:  # every connection task has ended with the nursery
                hub.close()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
        log.info("tracker stopped; catalogue closed")
