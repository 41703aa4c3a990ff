"""The optional fast path for sockets (``TrackerConfig.io == "epoll"``, Linux): one epoll for every connection.

:class:`ReadinessHub` waits on one edge-triggered epoll for all the tracker's
sockets; :class:`HubConnection` is a connection served through it, reading
and writing its socket's descriptor directly. With ``io="streams"`` neither
is used: sockets take the generic path of ``tracker.connection``, as memory
streams do.

The fast path answers a parked connection's requests in the hub's task, in
the connection task's contextvars context, and only with the handlers that
``tracker.handlers`` declares safe there; any other request is handed to the
connection's own task.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import Any, Final, Protocol

import attrs
import outcome
import trio

from common.codec import NEED_DATA, Sentinel
from common.errors import ConnectionClosed, PeerTimeout
from tracker.connection import RECEIVE_SIZE, Buffer, Connection

__all__ = ["ReadinessHub", "HubClient", "HubConnection", "HUB_EVENTS"]

#: Readiness events the hub takes from its epoll at a time (more stay for the next
#: poll) and answers before the other tasks run again. A read full of pipelined
#: small requests takes about a millisecond to answer.
HUB_EVENTS: Final = 64
#: Seconds the hub answers before the other tasks (timers, handed-over connections)
#: run again; the events it has not reached wait for its next turn. Each event
#: costs at most ``ANSWER_BUDGET`` and one request more, so under a flood the
#: others wait ~25 ms at most, not 64 events' worth.
HUB_BUDGET: Final = 0.02
#: The fast path wakes a connection's task with this: carry on from what the codec, ``pending`` and ``_held`` hold.
_HANDED_OVER: Final = Sentinel("HANDED_OVER")


class HubClient(Protocol):
    """What a socket registered with the hub stands for: its fast path, and when its parked task times out."""

    def serve_ready(self) -> object:
        """Read, answer, write: None if its task may stay parked, else what to wake it with (see :class:`ReadinessHub`)."""

    @property
    def idle_deadline(self) -> float:
        """When its task, parked, is woken with ``PeerTimeout`` (trio's clock; ``math.inf``: never)."""


class ReadinessHub:
    """Serves many sockets from one edge-triggered epoll, answering what it can without waking their tasks.

    ``trio.lowlevel.wait_readable`` registers the socket with EPOLLONESHOT, so
    every wait costs an ``epoll_ctl`` and trio rebuilds its bookkeeping for the
    descriptor. Here each socket is registered once, edge-triggered, in a
    separate epoll whose own descriptor one task (:meth:`run`) waits on through
    trio.

    When a socket with a parked task becomes readable, the hub calls the
    socket's ``on_ready`` in its own task step, inside the parked task's
    contextvars context (so a handler sees what that connection's task set,
    not what the hub's did). That callback (a connection's fast path: read,
    answer, write) returns None when it has done everything and the task may
    stay parked, or a value the parked task is woken with; an exception it
    raises is thrown into the parked task instead, so the connection's own
    task logs it, says goodbye and closes, and the hub serves on. Waking a
    task through trio's scheduler costs about as much as answering a typical
    request: at 20,000 requests/s (bench/tracker.py) the fast path took the
    tracker's CPU from about 44 to 36 us per request. Each connection still
    has its own task, which owns its lifetime, its idle timeout and
    everything that must wait (a request only the task answers, a socket
    buffer that is full).

    Edge-triggered means an event reports data that arrived since the last
    one, so a reader must drain what is there before it waits again (a read
    that fills the caller's buffer may have left more): see
    ``HubConnection._read``. An event for a socket whose task is busy is
    remembered, so its next wait returns at once.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._parked: dict[int, trio.lowlevel.Task] = {}
        self._clients: dict[int, HubClient] = {}
        #: Sockets that became readable while their task was not parked.
        self._ready: set[int] = set()
        #: Sockets to read until they are empty rather than trusting a short read
        #: (see :meth:`run`). The event that says so may come with the last data, and
        #: edge-triggered it comes once.
        self._read_on: set[int] = set()

    def register(self, fd: int, client: HubClient) -> None:
        """Watch ``fd``; ``client.serve_ready()`` runs in the hub's task when it is readable while its task waits."""
        # Data that is already there when the socket is added is reported at once.
        self._epoll.register(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLPRI | select.EPOLLET)
        self._clients[fd] = client

    def unregister(self, fd: int) -> None:
        """Forget ``fd``; call before the socket is closed, as its number may be reused at once."""
        self._ready.discard(fd)
        self._read_on.discard(fd)
        self._parked.pop(fd, None)
        self._clients.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed behind our back: the kernel dropped it
            pass

    def must_read_on(self, fd: int) -> bool:
        """Whether ``fd`` must be read until it is empty, a short read or not (see :meth:`run`)."""
        return fd in self._read_on

    async def wait_readable(self, fd: int) -> object:
        """Wait until ``fd`` is readable (returns None) or its client's ``serve_ready`` hands over (returns what it gave)."""
        if self.take_ready(fd):
            await trio.lowlevel.checkpoint()  # still a checkpoint: a flooding client cannot starve the rest
            return None
        return await self.park(fd, lambda _: self.unpark(fd))

    def take_ready(self, fd: int) -> bool:
        """Whether ``fd`` became readable while its task was not parked (the event is then taken: read it now)."""
        if fd in self._ready:
            self._ready.discard(fd)
            return True
        return False

    def park(self, fd: int, abort: Callable[[Any], trio.lowlevel.Abort]) -> Coroutine[Any, Any, object]:
        """Park the current task on ``fd`` until its client's ``serve_ready`` hands over; await what this returns.

        Not a coroutine function itself: it returns trio's wait, so a parked task
        keeps no frame of the hub's (issue 16: 10,000 idle connections are parked
        at any time). ``abort`` (cancelled while parked) must call :meth:`unpark`;
        a bound method costs less than a closure made for every wait. Call
        :meth:`take_ready` first: an event that came while the task was busy
        comes only once. Parked past its client's ``idle_deadline``, the task
        is woken with ``PeerTimeout`` (:meth:`expire_idle`).
        """
        self._parked[fd] = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(abort)

    def unpark(self, fd: int) -> trio.lowlevel.Abort:
        """The task parked on ``fd`` is cancelled: forget it (a :meth:`park` abort)."""
        del self._parked[fd]
        return trio.lowlevel.Abort.SUCCEEDED

    async def run(self) -> None:
        """Dispatch readiness events until cancelled."""
        epoll, parked, ready, clients, read_on = self._epoll, self._parked, self._ready, self._clients, self._read_on
        # Events after which a short read does not mean the socket is empty: the client
        # closed its end (the end of the stream is still to be read), the socket failed,
        # or urgent data came (a read stops at the urgent mark). Here rather than at
        # import: the module imports where there is no epoll, the hub is just never made.
        read_on_events = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR | select.EPOLLPRI
        reschedule = trio.lowlevel.reschedule
        backlog: list[tuple[int, int]] = []
        while True:
            if backlog:  # taken from the epoll, not answered yet: edge-triggered, they come only once
                events, backlog = backlog, []
            else:
                events = epoll.poll(0, HUB_EVENTS)
                if not events:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                    continue
            deadline = perf_counter() + HUB_BUDGET
            for i, (fd, mask) in enumerate(events):
                if perf_counter() > deadline:
                    backlog = events[i:]
                    break
                if fd not in clients:  # left while in the backlog
                    continue
                if mask & read_on_events:
                    read_on.add(fd)
                task = parked.get(fd)
                if task is None:
                    ready.add(fd)
                    continue
                try:
                    # The parked task is not running, so its context is free to enter.
                    handed_over = task.context.run(clients[fd].serve_ready)
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

    async def expire_idle(self, interval: float) -> None:
        """Every ``interval`` s, wake each task parked past its client's ``idle_deadline`` with ``PeerTimeout``; until cancelled.

        So an idle connection needs no cancel scope of its own (issue 16: a scope
        entered is ~0.8 KB, with its status and the two sets in it, for each of
        10,000 idle connections); its task ends as a timed-out one would. Each
        sweep is O(parked tasks): ~2 ms for 10,000.
        """
        parked, clients = self._parked, self._clients
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for fd in [fd for fd, task in parked.items() if clients[fd].idle_deadline <= now]:
                trio.lowlevel.reschedule(parked.pop(fd), outcome.Error(PeerTimeout("idle")))

    def close(self) -> None:
        """Close the epoll, once every connection using the hub has ended."""
        self._epoll.close()


@attrs.define(eq=False)
class HubConnection(Connection):
    """A connection on a ``trio.SocketStream`` whose reads wait on the hub, and whose socket is read and written directly.

    A request/reply client (one request in flight) leaves the socket empty
    after every reply, so ``receive_some`` (``recv`` first, then wait on
    EAGAIN) wastes a syscall per request, and ``send_all`` goes through trio's
    conflict detectors and try-then-wait machinery for a write that nearly
    always fits the socket buffer. This connection therefore waits for
    readability first and then reads, and writes directly, falling back to
    ``send_all`` for whatever the kernel did not take. Every read is a
    checkpoint, waiting or not, so the connection keeps yielding to the others.
    """

    #: The descriptor of the socket, kept rather than asked for each time:
    #: ``serve_connection`` closes the stream only after ``run`` returns, so the
    #: number cannot be reused by another connection while this one uses it.
    _fd: int = attrs.field(init=False, default=-1)
    _hub: ReadinessHub = attrs.field(init=False)
    #: Whether the last read may have left data in the socket (see ``_drained``), so
    #: the next read must not wait for a readiness event: the hub reports only new data.
    _unread: bool = attrs.field(init=False, default=True)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        assert isinstance(self.stream, trio.SocketStream) and self.service.hub is not None
        self._fd = self.stream.socket.fileno()
        self._hub = self.service.hub

    async def run(self) -> None:
        """As :meth:`Connection.run`, waiting for input parked in the hub, whose fast path answers what it can.

        An idle connection's task is parked here, in trio's wait and nothing
        else: no frame of a read (the bytes go to the codec in :meth:`_read`, in
        the hub's fast path when parked), none of the hub's (:meth:`ReadinessHub.park`).
        """
        hub, fd = self._hub, self._fd
        self.idle_deadline = trio.current_time() + self.service.config.idle_timeout
        hub.register(fd, self)
        try:
            while not await self._answer_all():
                if self._unread or hub.take_ready(fd):
                    # No wait, but still a checkpoint: a client that keeps the socket
                    # full must not keep every other connection waiting.
                    await trio.lowlevel.checkpoint()
                    self._read()
                else:  # woken once the fast path has fed the codec (_HANDED_OVER), or with its error or PeerTimeout
                    await hub.park(fd, self._unpark)
        finally:
            hub.unregister(fd)

    def _unpark(self, _: object) -> trio.lowlevel.Abort:
        return self._hub.unpark(self._fd)

    def serve_ready(self) -> object:
        """The hub's fast path: read what arrived, answer it and write the replies, without the task.

        Runs in the hub's task, in this connection task's contextvars context,
        and answers only with ``Handlers.fast``. Returns None once everything
        is answered and written; otherwise ``_HANDED_OVER``, and the woken task
        carries on from the codec, ``pending`` and ``_held``: the socket may hold
        more (see ``_drained``), the stream has ended, a request is one only the
        task answers, replies reached FLUSH_SIZE, or the socket did not take them
        all. Exceptions reach the task, which closes the connection as it would its own.
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
        stop = self.answer_ready()
        if self.pending:
            left = self._write(self.take_pending())
            if left:
                for rest in left:
                    self.queue(rest)
                return _HANDED_OVER
        if stop is not NEED_DATA:
            return _HANDED_OVER
        self.after_batch()
        return None

    def _read(self) -> None:
        """Feed the codec what the socket holds now; nothing when it holds nothing (a spurious or stale event)."""
        try:
            data = os.read(self._fd, RECEIVE_SIZE)
        except BlockingIOError:
            self._unread = False
            return
        except OSError:
            raise ConnectionClosed("connection lost") from None
        self._unread = not self._drained(data)
        self.codec.receive_data(data)

    def _drained(self, data: bytes) -> bool:
        """Whether a read took everything the socket had, so the next must wait for the hub's next event.

        A full read may have left more. So may a short one once the client has
        closed its end (the end of the stream is still to be read) or sent
        urgent data (a read stops at the urgent mark): the hub reports either
        only once, perhaps with the last data.
        """
        return len(data) < RECEIVE_SIZE and not self._hub.must_read_on(self._fd)

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
        buffers = self._write(buffers)
        if buffers:  # the client is not reading as fast as it asks: it may wait until the idle deadline
            with trio.move_on_at(self.idle_deadline) as scope:
                await super()._send(buffers)
            if scope.cancelled_caught:
                raise PeerTimeout("replies not read")
