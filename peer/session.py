"""One download session per source peer: connect, handshake, then a requester and a receiver.

::

    Session.run
    ├── connect, then HELLO -> WELCOME (within connect_timeout)
    ├── requester     keeps up to pipeline_depth REQUEST_CHUNKs in flight (the picker chooses)
    └── receiver      CHUNK_DATA -> a check in the download's nursery; CHUNK_ERROR -> back to the picker

A session owns the conversation with one peer; the
:class:`~peer.download.Downloader` owns its life (it starts it, says why it
ended and when that peer may be tried again) and checks the chunks it
receives. The stream comes from :attr:`DownloadContext.connect`, so tests run a
session over memory streams.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from common.codec import Codec
from common.errors import Busy, ChunkswarmError, ConnectionClosed, PeerTimeout, Refused
from common.framing import ErrorCode
from common.handshake import Agreement
from common.manifest import Manifest
from common.messages import CancelChunk, ChunkData, ChunkError, Error, Hello, RequestChunk
from peer.buffers import BufferPool
from peer.config import PeerConfig
from peer.connection import Connection
from peer.greeting import Connect, open_greeted
from peer.picker import Picker
from peer.secure import Private, secured
from peer.status import describe_remote
from peer.storage.chunk_io import Buffer
from peer.tasks import open_nursery

__all__ = ["DownloadContext", "Session"]

logger = logging.getLogger(__name__)

#: How long a session waits before asking again after a CHUNK_ERROR BUSY.
_BUSY_PAUSE = 0.05
#: Requests in flight to a source that has answered none yet (and never endgame duplicates):
#: a holder on trial holds few chunks, and never the last ones, hostage.
TRIAL_DEPTH = 2


@attrs.frozen
class DownloadContext:
    """What the sessions of one download share."""

    manifest: Manifest
    config: PeerConfig
    hello: Hello
    picker: Picker[bytes]
    buffers: BufferPool
    connect: Connect
    #: A private swarm's TLS and proof (``peer/secure.py``), or None.
    private: Private | None
    #: Taken before a received chunk is accepted, given back once it is checked: a
    #: peer whose chunks cannot be checked as fast as they come is read no faster.
    verify_slots: trio.Semaphore
    #: The download's nursery, where received chunks are checked: a check outlives
    #: the session that received the chunk.
    nursery: trio.Nursery
    #: Checks chunk ``index`` received by a session (its verification slot is taken).
    verify: Callable[[Session, int, Buffer], Awaitable[None]]
    #: Sends CANCEL_CHUNK for a chunk to the source with that peer id (its request was dropped).
    cancel: Callable[[bytes, int], None]
    #: Wakes every session: a chunk became requestable again, from anyone.
    wake_all: Callable[[], None]
    #: Asks the tracker for holders now: a session has nothing left to request.
    refresh: Callable[[], None]


@attrs.define(eq=False)
class Session:
    """One connection to the peer at ``address``; see the module docstring."""

    context: DownloadContext
    peer_id: bytes
    address: tuple[str, int]
    #: How logs and counters name the peer: ``label (host:port)`` once it has said WELCOME.
    name: str
    #: Cancelled to end the session early (a banned peer).
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: The connection, once the stream is open (None while connecting).
    conn: Connection | None = None
    pause_until: float = 0.0
    #: Set when this session may have something new to request.
    wakeup: trio.Event = attrs.field(factory=trio.Event)
    #: When this peer must have answered: ``request_timeout`` after our last request
    #: or its last answer. Frames that answer nothing do not move it.
    answer_due: float = 0.0
    #: The receiver's wait for the next frame, whose deadline is ``answer_due``.
    answer_wait: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: When the session started (``trio.current_time``), and whether the peer has answered a request yet:
    #: until then it is on trial (``first_answer_timeout``, :data:`TRIAL_DEPTH`).
    since: float = 0.0
    delivered: bool = False
    #: Chunks accepted since the downloader last compared its sources (``peer.sources.Sources.rotate``).
    recent: int = 0
    #: Asked for nothing more: the session ends once its requests in flight are answered (its place rotates).
    retiring: bool = False

    def wake(self) -> None:
        self.wakeup.set()

    def expect_answer(self, within: float) -> None:
        """This peer has ``within`` seconds from now to answer."""
        self.answer_due = self.answer_wait.deadline = trio.current_time() + within

    async def run(self) -> None:
        """Connect, shake hands, then request and receive chunks until the connection ends (with the error why).

        :class:`~common.errors.Busy` if the peer is busy; :class:`ConnectionClosed`,
        :class:`PeerTimeout`, a protocol error, ``OSError`` or
        ``trio.TooSlowError`` (connecting) if it is gone or misbehaves.
        """
        context = self.context
        with trio.fail_after(context.config.connect_timeout):
            conn, agreement = await self._greet()
        self.conn = conn
        self.name = describe_remote(agreement.welcome.agent, self.address)
        logger.debug("%s: connected to %s", context.config.name, describe_remote(agreement.welcome.agent, self.address, agreement.remote_node))
        async with open_nursery() as nursery:
            nursery.start_soon(self._requester, conn)
            await self._receiver(conn)

    async def _greet(self) -> tuple[Connection, Agreement]:
        """Connect and shake hands (``peer/greeting.py``); a refusal is :class:`~common.errors.Busy` or :class:`ConnectionClosed`."""
        context = self.context
        # Nothing a serving peer sends is larger than one chunk: a header that claims more is
        # refused before anything is buffered (a liar could otherwise make us hold 16 MiB).
        max_receive = max(16 * 1024, context.manifest.chunk_size + 64)
        # In a private swarm: TLS, and a proven member whose node id is the peer id the tracker listed.
        connect, prove = secured(context.private, context.connect, self.name, self.peer_id)
        try:
            return await open_greeted(connect, self.address, context.hello, key=context.config.node_key, prove=prove,
                                      make_codec=lambda: Codec(max_receive_size=max_receive, allocate_body=context.buffers.take))  # fmt: skip
        except Busy:
            raise  # it may serve us later: the downloader retries it
        except Refused as exc:
            raise ConnectionClosed(str(exc)) from None

    async def cancel(self, index: int) -> None:
        """Tell the peer we no longer want chunk ``index`` (endgame: another peer sent it first); a courtesy, bounded."""
        context = self.context
        conn = self.conn
        if conn is None:
            return
        with trio.move_on_after(context.config.request_timeout):
            try:
                await conn.send(CancelChunk(context.manifest.file_id, index))
            except ChunkswarmError as exc:  # its connection is ending; its own task reports why
                logger.debug("%s: no cancel of chunk %d to %s: %s", context.config.name, index, self.name, exc)

    async def aclose(self) -> None:
        if self.conn is not None:
            await self.conn.aclose()

    async def _requester(self, conn: Connection) -> None:
        context = self.context
        picker = context.picker
        file_id = context.manifest.file_id
        timeout = context.config.request_timeout
        key = self.peer_id
        while True:
            if self.pause_until > trio.current_time():
                await trio.sleep_until(self.pause_until)
            # A fresh event before picking: whatever changes after this pick wakes us.
            self.wakeup = trio.Event()
            if self.retiring:  # no chunk on its way is thrown away: it ends once they are in
                if not picker.in_flight(key):
                    self.scope.cancel()
                await self.wakeup.wait()
                continue
            waiting = bool(picker.in_flight(key))
            now = trio.current_time()
            indexes = picker.pick_many(key, now=now) if self.delivered else picker.pick_many(key, limit=TRIAL_DEPTH, endgame=False, now=now)
            if indexes:
                try:
                    with trio.fail_after(timeout):  # a peer that takes no requests is dropped
                        await conn.send_many([RequestChunk(file_id, i) for i in indexes])
                except trio.TooSlowError:
                    raise PeerTimeout(f"took no request within {timeout:g} s") from None
                if not waiting:  # the clock starts at the first request it owes us
                    self.expect_answer(timeout if self.delivered else min(context.config.first_answer_timeout, timeout))
                continue
            if not picker.in_flight(key) and key not in picker.useful_peers():
                context.refresh()
            with trio.move_on_after(picker.recheck_after(key)):  # endgame: requests of others may turn late meanwhile
                await self.wakeup.wait()

    async def _receiver(self, conn: Connection) -> None:
        context = self.context
        picker = context.picker
        file_id = context.manifest.file_id
        verify_slots = context.verify_slots
        start_check, verify = context.nursery.start_soon, context.verify
        timeout = context.config.request_timeout
        first_timeout = min(context.config.first_answer_timeout, timeout)
        key = self.peer_id
        self.expect_answer(timeout)
        received = conn.received
        while True:
            # Only an answer moves the deadline on, so a peer that sends anything
            # but answers cannot keep our requests in flight forever.
            with trio.CancelScope(deadline=self.answer_due) as self.answer_wait:
                message = await conn.receive()
            if self.answer_wait.cancelled_caught:
                if picker.in_flight(key):
                    if self.delivered:
                        raise PeerTimeout(f"no answer within {timeout:g} s")
                    # On trial: bytes of a first (large) chunk on their way are worth waiting for, up to request_timeout.
                    if conn.received == received or trio.current_time() - self.since >= timeout:
                        raise PeerTimeout(f"no answer within {first_timeout:g} s (none yet since it said WELCOME)")
                    received = conn.received
                    self.expect_answer(first_timeout)
                    continue
                self.expect_answer(timeout)
                continue
            if isinstance(message, ChunkData):
                accepted = message.file_id == file_id and picker.on_data(key, message.index, trio.current_time())
                self.wake()  # a pipeline slot is free
                if not accepted:
                    context.buffers.give_back(message.data)
                    continue
                # Endgame: its other copies are cancelled as it arrives, not once it is checked (a busy
                # downloader's checks wait, and meanwhile the other server sends its copy too).
                for other in picker.on_arrival(key, message.index):
                    context.cancel(other, message.index)
                try:
                    await verify_slots.acquire()  # backpressure on this peer: nothing more is read until it can be checked
                except BaseException:
                    picker.on_not_kept(message.index)  # no check will start: it is missing again
                    context.buffers.give_back(message.data)
                    raise
                self.delivered = True
                self.recent += 1
                self.expect_answer(timeout)
                start_check(verify, self, message.index, message.data)
            elif isinstance(message, ChunkError) and message.file_id == file_id:
                if not self.delivered and trio.current_time() - self.since >= timeout:
                    raise PeerTimeout(f"refused every request for {timeout:g} s")  # a trial place is not for ever
                self.expect_answer(timeout if self.delivered else first_timeout)
                not_held = message.code != ErrorCode.BUSY
                picker.on_rejected(key, message.index, not_held=not_held)
                if not not_held:
                    self.pause_until = trio.current_time() + _BUSY_PAUSE
                context.wake_all()  # the chunk is requestable again, from anyone
            elif isinstance(message, ChunkError):
                raise ConnectionClosed(f"sent a CHUNK_ERROR about another file ({message.file_id.hex()[:16]})")
            elif isinstance(message, Error):
                raise ConnectionClosed(f"sent ERROR {message.code_name}: {message.message}")
            else:
                raise ConnectionClosed(f"sent an unexpected {type(message).__name__}")
