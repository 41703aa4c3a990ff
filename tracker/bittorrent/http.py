"""The HTTP announce shell (BEP 3): listen, frame requests, answer through :class:`BtFront`, write.

One task per connection (``trio.serve_listeners``), keep-alive and
pipelining. Sockets take a fast path when there is an epoll
(``use_hub``): the connection registers with a
:class:`~tracker.hub.ReadinessHub`, whose task reads, answers and writes in
its own step without waking the connection's task; the task wakes only to
close, to time out an idle client or to wait for a client that is not reading
its answers. Other streams (memory streams in tests, ``io="streams"``) take
the generic path through ``receive_some``/``send_all``. A request that cannot
be framed gets a 400 (414, 431 ...) with a bencoded failure reason and the
connection is closed; a refused announce gets a 200 with its failure reason
and the connection serves on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import ClassVar, Final

import attrs
import trio

from common.address import format_address, ip_group
from tracker.bittorrent.errors import BadHttpRequest
from tracker.bittorrent.front import BtFront
from tracker.bittorrent.http_framing import RequestReader, response
from tracker.bittorrent.replies import failure_reply
from tracker.connection import observed_host
from tracker.hub import ReadinessHub
from tracker.limits import Tally

__all__ = ["HttpAnnounceServer", "serve_http"]

log = logging.getLogger(__name__)

#: Bytes read at a time.
RECEIVE_SIZE: Final = 65536
#: Bytes of requests one connection's turn reads at most: a client that pipelines
#: without end is answered a turn at a time, in between the others'.
MAX_TURN: Final = 4 * RECEIVE_SIZE
#: What the hub's fast path tells a connection's task.
_CLOSE: Final = "close"
_WAKE: Final = "wake"  # unsent answers, or requests left to read


def answer(front: BtFront, reader: RequestReader, host: str, where: str) -> tuple[list[bytes], bool]:
    """Every response to what ``reader`` holds complete, and whether the connection closes after them."""
    out: list[bytes] = []
    while True:
        try:
            request = reader.next_request()
        except BadHttpRequest as exc:
            log.info("closing HTTP announce connection from %s: %s", where, exc.reason)
            out.append(response(exc.status, failure_reply(exc.reason), close=True))
            return out, True
        if request is None:
            return out, False
        out.append(front.http_answer(request, host))
        if not request.keep_alive:
            return out, True


@attrs.define(eq=False)
class HttpAnnounceServer:
    """The HTTP side of one tracker: its connections, their caps, the hub if sockets take the fast path."""

    front: BtFront
    admits: Callable[[str], bool]
    hub: ReadinessHub | None = None
    connections: int = 0
    per_network: Tally = attrs.field(factory=Tally)
    requests: int = 0

    async def serve_socket(self, stream: trio.SocketStream) -> None:
        """``trio.serve_listeners`` handler."""
        try:
            remote = stream.socket.getpeername()
        except OSError:  # reset before we looked
            await trio.aclose_forcefully(stream)
            return
        await self.handle_stream(stream, observed_host(remote[0]), remote[1])

    async def handle_stream(self, stream: trio.abc.Stream, host: str, port: int) -> None:
        """Serve one connection until it closes, misbehaves or idles; always closes ``stream``; never raises but Cancelled."""
        where = format_address(host, port)
        network = ip_group(host)
        config = self.front.config
        if not self.admits(host):
            log.warning("refusing HTTP announce connection from %s: outside the allowed address ranges", where)
            await trio.aclose_forcefully(stream)
            return
        if self.connections >= config.max_connections or self.per_network.get(network) >= config.max_connections_per_ip:
            log.warning("refusing HTTP announce connection from %s: too many connections", where)
            with trio.move_on_after(1):
                await stream.send_all(response(503, failure_reply("too many connections: retry later"), close=True))
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        self.per_network.add(network)
        try:
            if self.hub is not None and isinstance(stream, trio.SocketStream):
                await HubHttpConnection(self, stream, host, where).run()
            else:
                await self._serve_generic(stream, host, where)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            log.debug("HTTP announce connection from %s went away", where)
        except Exception:
            log.exception("internal error on the HTTP announce connection from %s", where)
        finally:
            self.connections -= 1
            self.per_network.remove(network)
            await trio.aclose_forcefully(stream)

    async def _serve_generic(self, stream: trio.abc.Stream, host: str, where: str) -> None:
        reader = RequestReader()
        idle = self.front.config.idle_timeout
        while True:
            with trio.move_on_after(idle):
                data = await stream.receive_some(RECEIVE_SIZE)
                reader.receive_data(data)
                out, close = answer(self.front, reader, host, where)
                self.requests += len(out)
                if out:
                    await stream.send_all(b"".join(out))
                if close or not data:
                    return
                continue
            log.debug("closing HTTP announce connection from %s: idle for %gs", where, idle)
            return


@attrs.define(eq=False)
class HubHttpConnection:
    """A socket served by the hub's fast path: read, answer and write without waking this connection's task."""

    server: HttpAnnounceServer
    stream: trio.SocketStream
    host: str
    where: str
    reader: RequestReader = attrs.field(factory=RequestReader)
    #: What the socket did not take; the task sends it (the client is not reading as fast as it asks).
    unsent: list[bytes] = attrs.field(factory=list)
    closing: bool = False
    #: Whether the last turn stopped at ``MAX_TURN`` with requests left in the socket: the
    #: hub reports only new data, so the task reads on.
    more: bool = False
    #: When the fast path last answered: the idle deadline is checked against it when it
    #: passes rather than moved per request (moving a trio deadline costs more than an answer).
    last_active: float = attrs.field(factory=trio.current_time)
    _fd: int = attrs.field(init=False)
    #: Never timed out by the hub (``HubClient``): :meth:`run` bounds its own wait.
    idle_deadline: ClassVar[float] = math.inf

    def __attrs_post_init__(self) -> None:
        self._fd = self.stream.socket.fileno()

    async def run(self) -> None:
        hub = self.server.hub
        assert hub is not None
        idle = self.server.front.config.idle_timeout
        hub.register(self._fd, self)
        try:
            while True:
                with trio.move_on_at(self.last_active + idle) as scope:
                    woken = await hub.wait_readable(self._fd)
                if scope.cancelled_caught:
                    if trio.current_time() < self.last_active + idle:
                        continue  # answered by the fast path meanwhile
                    log.debug("closing HTTP announce connection from %s: idle for %gs", self.where, idle)
                    return
                if woken is None:  # readable while the task was not parked: served here
                    woken = self.serve_ready()
                while True:
                    if self.unsent:
                        await self.stream.send_all(b"".join(self.unsent))
                        self.unsent.clear()
                    if woken == _CLOSE or self.closing:
                        return
                    if not self.more:
                        break
                    await trio.lowlevel.checkpoint()  # the others' turn before this client's next
                    woken = self.serve_ready()
        finally:
            hub.unregister(self._fd)

    def serve_ready(self) -> object:
        """Read what arrived, answer it and write; None when the task may stay parked."""
        server, fd, reader = self.server, self._fd, self.reader
        must_read_on = server.hub.must_read_on if server.hub is not None else (lambda fd: False)
        ended = self.more = False
        taken = 0
        while True:  # edge-triggered: drain what is there, or note that more is left
            if taken >= MAX_TURN:
                self.more = True
                break
            try:
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:
                break
            except OSError:
                return _CLOSE
            reader.receive_data(data)
            taken += len(data)
            if not data:
                ended = True
                break
            if len(data) < RECEIVE_SIZE and not must_read_on(fd):
                break
        out, close = answer(server.front, reader, self.host, self.where)
        if out:
            server.requests += len(out)
            payload = out[0] if len(out) == 1 else b"".join(out)
            try:
                sent = os.write(fd, payload)
            except BlockingIOError:
                sent = 0
            except OSError:
                return _CLOSE
            if sent < len(payload):
                self.unsent.append(payload[sent:])
                self.closing = close or ended
                return _WAKE
        if close or ended:
            return _CLOSE
        self.last_active = trio.current_time()
        return _WAKE if self.more else None


async def serve_http(
    server: HttpAnnounceServer, host: str, port: int, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on ``host:port`` (``"*"``: every interface) and serve until cancelled; ``task_status`` gets the bound address."""
    listeners = await trio.open_tcp_listeners(port, host=None if host in ("", "*") else host)
    hub = server.hub
    try:
        async with trio.open_nursery() as nursery:
            if hub is not None:
                nursery.start_soon(hub.run)
            await nursery.start(trio.serve_listeners, server.serve_socket, listeners)
            bound = listeners[0].socket.getsockname()
            for listener in listeners:
                address = listener.socket.getsockname()
                log.info("BitTorrent HTTP announce on http://%s/announce", format_address(observed_host(address[0]), address[1]))
            task_status.started((observed_host(bound[0]), bound[1]))
    finally:
        if hub is not None:  # every connection task has ended with the nursery
            hub.close()
