"""The peer's side of the tracker conversation.

:class:`TrackerLink` is one connection: HELLO/WELCOME and REGISTER/OK on
opening, then requests answered in order (pipelining allowed: every request
queues a waiter, one reader task hands replies to waiters in FIFO order).

:class:`TrackerClient` keeps a link up: heartbeats at the interval WELCOME
asked for, and when the tracker goes away it reconnects with exponential
backoff, re-registers, and lets the peer re-publish and re-announce what it
holds (``on_connected``). Given several trackers (``fallbacks``: trackers
sharing one swarm, ``chunkswarm tracker --state``), it uses one, and when it
fails moves on to the next in turn, wrapping around, and says which in the log.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import attrs
import trio

from common.address import format_address
from common.capabilities import GATEWAY
from common.errors import (
    ChunkswarmError,
    ConnectionClosed,
    PeerTimeout,
    Refused,
    RemoteProtocolError,
    TrackerError,
    TrackerUnavailable,
    describe,
)
from common.handshake import Agreement
from common.identity import NodeKey
from common.messages import Deregister, Error, Heartbeat, Hello, Message, Ok, Register
from peer.connection import Connection
from peer.greeting import open_greeted
from peer.secure import Private
from peer.tasks import open_nursery

__all__ = ["TrackerLink", "TrackerClient", "open_query_link"]

logger = logging.getLogger(__name__)

M = TypeVar("M")


class _Waiter:
    """One request's reply; only the last request of a batch has an event (replies come in order: once it is
    answered, or failed, so are all before it), so a batch of 4,000 waits once, not 4,000 times."""

    __slots__ = ("event", "reply", "error")

    def __init__(self, event: trio.Event | None = None) -> None:
        self.event = event
        self.reply: Message | None = None
        self.error: ChunkswarmError | None = None

    def done(self) -> None:
        if self.event is not None:
            self.event.set()


class TrackerLink:
    """One registered connection to the tracker."""

    def __init__(self, conn: Connection, agreement: Agreement) -> None:
        self.conn = conn
        #: What the handshake settled: the tracker's WELCOME and the capabilities in use.
        self.agreement = agreement
        self.welcome = agreement.welcome
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._send_lock = trio.Lock()
        self._dead: ChunkswarmError | None = None

    @classmethod
    async def open(
        cls, address: tuple[str, int], hello: Hello, *, timeout: float, register_port: int | None, key: NodeKey | None = None,
        private: Private | None = None, http_port: int = 0,
    ) -> TrackerLink:
        """Connect, say HELLO (identified with ``key``, if given), and REGISTER ``register_port`` if given; :class:`TrackerUnavailable` on failure.

        In a private swarm (``private``) the connection is TLS and membership is proven after WELCOME.
        ``http_port`` (the gateway's, if any) goes with REGISTER when the tracker speaks ``gateway`` (PROTOCOL.md §8.10).
        """
        where = format_address(*address)

        async def connect(address: tuple[str, int]) -> trio.abc.Stream:
            try:
                with trio.fail_after(timeout):
                    stream = await trio.open_tcp_stream(*address)
                    return stream if private is None else await private.connect(stream, f"the tracker at {where}")
            except (OSError, trio.TooSlowError) as exc:
                raise TrackerUnavailable(f"tracker at {where} unreachable: {getattr(exc, 'strerror', None) or exc or 'timed out'}") from None

        try:
            prove = None if private is None else private.prove_client
            conn, agreement = await open_greeted(connect, address, hello, answer_timeout=timeout, key=key, prove=prove)
        except Refused as exc:
            raise TrackerError(f"tracker refused HELLO: {exc}", code=exc.code) from None
        except (ConnectionClosed, PeerTimeout, RemoteProtocolError) as exc:
            raise TrackerUnavailable(f"tracker at {where} did not complete the handshake: {exc}") from None
        try:
            if register_port is not None:
                await conn.send(Register(register_port, http_port if agreement.speaks(GATEWAY) else 0))
                reply = await conn.receive_within(timeout)
                if isinstance(reply, Error):
                    raise TrackerError(f"tracker refused REGISTER: {reply.message}", code=reply.code)
                if not isinstance(reply, Ok):
                    raise RemoteProtocolError(f"tracker answered REGISTER with {type(reply).__name__}")
        except (ConnectionClosed, PeerTimeout, RemoteProtocolError) as exc:
            await conn.aclose()
            raise TrackerUnavailable(f"tracker at {where} did not complete the handshake: {exc}") from None
        except BaseException:
            await conn.aclose()
            raise
        return cls(conn, agreement)

    def speaks(self, capability: str) -> bool:
        """Whether the handshake agreed on ``capability``: only then is the feature used on this link."""
        return self.agreement.speaks(capability)

    async def run(self) -> None:
        """Hand replies to waiters until the connection ends; then raises :class:`ConnectionClosed`."""
        try:
            while True:
                message = await self.conn.receive()
                if not self._waiters:
                    raise RemoteProtocolError(f"unsolicited {type(message).__name__} from the tracker")
                waiter = self._waiters.popleft()
                waiter.reply = message
                waiter.done()
        except ChunkswarmError as exc:
            self._fail(exc)
            raise ConnectionClosed(f"tracker connection lost: {exc}") from None
        finally:
            self._fail(ConnectionClosed("tracker connection closed"))
            with trio.CancelScope(shield=True):
                await self.conn.aclose()

    def _fail(self, exc: ChunkswarmError) -> None:
        if self._dead is None:
            self._dead = exc if isinstance(exc, ConnectionClosed) else ConnectionClosed(str(exc))
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = self._dead
            waiter.done()

    async def request_many(self, messages: Sequence[Message], *, timeout: float) -> list[Message]:
        """Send ``messages`` in one write; their replies, in order. ERROR replies are returned, not raised."""
        if self._dead is not None:
            raise self._dead
        if not messages:
            return []
        answered = trio.Event()
        waiters = [_Waiter() for _ in messages[1:]] + [_Waiter(answered)]
        try:
            with trio.fail_after(timeout):
                async with self._send_lock:
                    # Queue the waiters and send as one step that cancellation cannot split:
                    # a waiter without its request (or half a request on the wire) would
                    # pair every later reply with the wrong request.
                    self._waiters.extend(waiters)
                    with trio.CancelScope(shield=True), trio.move_on_after(timeout) as sending:
                        await self.conn.send_many(messages)
                    if sending.cancelled_caught:
                        raise trio.TooSlowError
                await answered.wait()
        except trio.TooSlowError:
            # Replies would now pair with the wrong requests: this link is done.
            self._fail(ConnectionClosed("tracker request timed out"))
            await self.conn.aclose()
            raise PeerTimeout(f"the tracker did not answer within {timeout:g} s") from None
        except ConnectionClosed as exc:
            self._fail(exc)
            raise
        replies = []
        for waiter in waiters:
            if waiter.error is not None:
                raise waiter.error
            assert waiter.reply is not None
            replies.append(waiter.reply)
        return replies

    async def request(self, message: Message, expect: type[M], *, timeout: float) -> M:
        """One request; its reply of type ``expect``, :class:`TrackerError` for an ERROR reply."""
        (reply,) = await self.request_many((message,), timeout=timeout)
        return check_reply(reply, expect)


@asynccontextmanager
async def open_query_link(
    address: tuple[str, int], hello: Hello, *, timeout: float, key: NodeKey | None = None, private: Private | None = None,
    fallbacks: Sequence[tuple[str, int]] = (),
) -> AsyncIterator[TrackerLink]:
    """A query-only session: HELLO (``hello.listen_port`` should be 0) and never REGISTER.

    For clients that serve nothing (``chunkswarm ls``): the tracker answers their
    queries but never lists them as a peer. The link closes when the block ends.
    ``fallbacks``: trackers of the same swarm tried in turn when ``address`` cannot be reached.
    """
    trackers = [address, *fallbacks]
    for i, tracker in enumerate(trackers):
        try:
            link = await TrackerLink.open(tracker, hello, timeout=timeout, register_port=None, key=key, private=private)
            break
        except TrackerUnavailable as exc:
            if i + 1 == len(trackers):
                raise
            logger.warning("%s; trying the tracker at %s", exc, format_address(*trackers[i + 1]))
    async with open_nursery() as nursery:
        nursery.start_soon(link.run)
        try:
            yield link
        finally:
            nursery.cancel_scope.cancel()


def check_reply(reply: Message, expect: type[M]) -> M:
    """``reply`` if it is an ``expect``; :class:`TrackerError` for ERROR; protocol error otherwise."""
    if isinstance(reply, expect):
        return reply
    if isinstance(reply, Error):
        raise TrackerError(f"tracker error {reply.code_name}: {reply.message}", code=reply.code, sequence=reply.sequence)
    raise RemoteProtocolError(f"tracker sent {type(reply).__name__}, expected {expect.__name__}")


@attrs.define(eq=False)
class TrackerClient:
    """A tracker link kept alive: heartbeats, reconnection with backoff, re-registration."""

    address: tuple[str, int]
    hello: Hello
    listen_port: int
    nursery: trio.Nursery
    #: Called on every (re)connection, after REGISTER: re-publish and re-announce.
    on_connected: Callable[[TrackerLink], Awaitable[None]]
    timeout: float = 10.0
    min_delay: float = 0.2
    max_delay: float = 5.0
    #: The node's key: every link is identified with it (PROTOCOL.md §8.6) when the tracker speaks ``identity``.
    key: NodeKey | None = None
    private: Private | None = None
    #: Further trackers of the same swarm, tried in turn after ``address`` when it fails; ``address`` is the one in use.
    fallbacks: Sequence[tuple[str, int]] = ()
    #: The port of this peer's HTTP gateway, sent with every REGISTER (PROTOCOL.md §8.10); 0: none.
    http_port: int = 0
    _link: TrackerLink | None = attrs.field(init=False, default=None)
    _up: trio.Event = attrs.field(init=False, factory=trio.Event)
    _scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    #: Every tracker, in the order they are tried: ``address`` as first given, then ``fallbacks``.
    _trackers: list[tuple[str, int]] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._trackers = [self.address, *(a for a in self.fallbacks if a != self.address)]

    @property
    def connected(self) -> bool:
        return self._link is not None

    def speaks(self, capability: str) -> bool:
        """Whether the current link agreed on ``capability`` (False while disconnected)."""
        link = self._link
        return link is not None and link.speaks(capability)

    async def connect(self, *, retry: bool = False) -> None:
        """Connect and register now (raising :class:`TrackerUnavailable` or :class:`TrackerError`), then stay connected.

        While an earlier link is being re-established in the background, this waits up to
        ``timeout`` for that reconnection and raises :class:`TrackerUnavailable` if it has not
        succeeded by then (the background attempts go on until :meth:`disconnect`).

        With ``retry``, a tracker that cannot be reached now is not an error: it is
        tried once here (so a tracker that is up is connected on return, as without
        ``retry``), then in the background with the same backoff as a reconnection,
        and this returns (a seeder started before its tracker).
        """
        if self._scope is not None:
            if not retry:
                await self._current()
            return
        try:
            link = await self._open()
        except (ChunkswarmError, OSError):
            if not retry:
                raise
            await self.nursery.start(self._supervise, None)  # which says why, and goes on trying
            return
        await self.nursery.start(self._supervise, link)

    async def disconnect(self, *, timeout: float = 2.0) -> None:
        """DEREGISTER (bounded by ``timeout``) and stop; :meth:`connect` works again later."""
        link, scope = self._link, self._scope
        if link is not None:
            with trio.move_on_after(timeout):
                try:
                    await link.request(Deregister(), Ok, timeout=timeout)
                except ChunkswarmError as exc:
                    logger.debug("DEREGISTER failed: %s", exc)
        if scope is not None:
            scope.cancel()
        self._scope = None
        self._link = None
        self._up = trio.Event()

    async def request_many(self, messages: Sequence[Message]) -> list[Message]:
        """Send on the current link, waiting up to ``timeout`` for a reconnection if it is down."""
        link = await self._current()
        return await link.request_many(messages, timeout=self.timeout)

    async def request(self, message: Message, expect: type[M]) -> M:
        link = await self._current()
        return await link.request(message, expect, timeout=self.timeout)

    async def link(self) -> TrackerLink:
        """The current link (waiting up to ``timeout`` for a reconnection): for a batch that needs a timeout of its own."""
        return await self._current()

    async def _current(self) -> TrackerLink:
        if self._scope is None:
            raise TrackerUnavailable("not connected to the tracker")
        if self._link is None:
            with trio.move_on_after(self.timeout):
                await self._up.wait()
        if self._link is None:
            raise TrackerUnavailable(
                f"tracker at {format_address(*self.address)} unreachable (no answer within {self.timeout:g} s); "
                "still reconnecting in the background"
            )
        return self._link

    async def _open(self) -> TrackerLink:
        """A link to the tracker in use, or else to the next that answers (one round over them all); the last failure if none does."""
        start = self._trackers.index(self.address)
        trackers = self._trackers[start:] + self._trackers[:start]
        failure: ChunkswarmError | OSError | None = None
        for address in trackers:
            try:
                link = await TrackerLink.open(address, self.hello, timeout=self.timeout, register_port=self.listen_port, key=self.key,
                                              private=self.private, http_port=self.http_port)  # fmt: skip
            except (TrackerUnavailable, OSError) as exc:
                failure = exc
                if len(trackers) > 1:
                    logger.warning("%s; trying the next tracker", exc)
                continue
            if address != self.address:
                logger.warning("moved to the tracker at %s (the tracker at %s failed)", format_address(*address), format_address(*self.address))
                self.address = address
            return link
        assert failure is not None
        raise failure

    async def _supervise(self, link: TrackerLink | None, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``link`` (None: not connected yet) up, reconnecting with backoff; started once connected, or at once without a link."""
        with trio.CancelScope() as scope:
            self._scope = scope
            first = True
            if link is None:
                first = False
                task_status.started()
                link = await self._reconnect()
                logger.info("connected to the tracker at %s", format_address(*self.address))
            while True:
                try:
                    async with open_nursery() as nursery:
                        nursery.start_soon(link.run)
                        self._link = link
                        await self.on_connected(link)
                        self._up.set()
                        if first:
                            first = False
                            task_status.started()
                        interval = link.welcome.heartbeat_interval
                        if interval > 0:
                            nursery.start_soon(self._heartbeat, link, interval)
                except* (ChunkswarmError, OSError) as lost:  # the link's reader and the heartbeat may both fail
                    logger.warning("lost the tracker at %s: %s; reconnecting", format_address(*self.address), describe(lost))
                if first:
                    first = False
                    task_status.started()
                self._link = None
                self._up = trio.Event()
                link = await self._reconnect()
                logger.info("reconnected to the tracker at %s", format_address(*self.address))

    async def _reconnect(self) -> TrackerLink:
        """A new link, tried with exponential backoff until it works; the first failure is logged as a warning, the rest at debug."""
        delay = self.min_delay
        told = False
        while True:
            try:
                return await self._open()
            except (ChunkswarmError, OSError) as exc:
                if not told:
                    logger.warning("%s; retrying every %g s at most", exc, self.max_delay)
                    told = True
                else:
                    logger.debug("tracker still unreachable: %s", exc)
            await trio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    async def _heartbeat(self, link: TrackerLink, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            await link.request(Heartbeat(), Ok, timeout=self.timeout)
