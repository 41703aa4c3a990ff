"""The web UI's server: hypercorn's trio HTTP server, in the tracker's own process and nursery, with a connection cap.

:func:`serve_web` binds the socket itself, so that a port already taken is
one warning and a tracker without a web UI, never a tracker that fails to
start. Each accepted connection is served by hypercorn's trio
``TCPServer`` (what ``hypercorn.trio.serve`` runs per connection), behind a
cap on open connections: ``hypercorn.trio.serve`` has none, and every HTTP
connection is a file descriptor of the tracker's process, which its protocol
port needs too. Hypercorn's timeouts bound each connection: a request must
arrive within ``keep_alive_timeout`` and be read within ``read_timeout``, and
its head may not exceed ``h11_max_incomplete_size``.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Final

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from common.address import format_address
from tracker.web.app import create_app
from tracker.web.state import WebState

if TYPE_CHECKING:
    from tracker.service import TrackerService

__all__ = ["serve_web", "web_port", "hypercorn_config"]

log = logging.getLogger(__name__)

#: Seconds an HTTP connection may wait for its next request, and take to send one.
KEEP_ALIVE_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 10.0
#: The largest request head (request line and headers) read before a 400.
MAX_HEAD: Final = 16 * 1024


def web_port(protocol_port: int, configured_port: int, asked: int | None) -> int:
    """The web UI's port: as asked, else the protocol port + 1 (a free one when the protocol's was picked, ``--port 0``)."""
    if asked is not None:
        return asked
    if configured_port == 0 or protocol_port >= 65535:
        return 0
    return protocol_port + 1


def hypercorn_config() -> Config:
    config = Config()
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.read_timeout = int(READ_TIMEOUT)
    config.h11_max_incomplete_size = MAX_HEAD
    config.graceful_timeout = 1.0
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("tracker.web.hypercorn")
    return config


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_web(service: TrackerService, protocol_port: int, *, task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the web UI and API of ``service`` until cancelled; ``task_status.started`` gets its URL, or None if its port is taken."""
    config = service.config
    assert config.http_host is not None
    host = "0.0.0.0" if config.http_host in ("", "*") else config.http_host
    port = web_port(protocol_port, config.port, config.http_port)
    try:
        sock = _bind(host, port)
    except OSError as exc:
        log.warning("no web UI: cannot listen on %s (%s); the tracker serves on without it", format_address(host, port), exc.strerror or exc)
        task_status.started(None)
        return
    bound_port = sock.getsockname()[1]
    shown = "127.0.0.1" if host == "0.0.0.0" else host
    url = f"http://{format_address(shown, bound_port)}/"
    state = WebState.create(service, protocol_port)
    hypercorn = hypercorn_config()
    app = wrap_app(create_app(state), hypercorn.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
    context = WorkerContext(None)
    cap = config.max_http_connections

    async def handle(stream: trio.SocketStream) -> None:
        try:
            remote = stream.socket.getpeername()[0]
        except OSError:  # reset before we looked
            await trio.aclose_forcefully(stream)
            return
        if not config.allow.admits(remote):  # --allow holds for the web UI as for the protocol port
            log.info("web UI: refusing %s, outside the allowed address ranges (%s)", remote, config.allow)
            await trio.aclose_forcefully(stream)
            return
        if state.http_connections >= cap:
            log.info("web UI: refusing a connection, %d are open (max_http_connections)", cap)
            await trio.aclose_forcefully(stream)
            return
        state.http_connections += 1
        try:
            await TCPServer(app, hypercorn, context, ConnectionState({}), stream).run()  # type: ignore[arg-type]
        finally:
            state.http_connections -= 1

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.sample_rate)
        await nursery.start(trio.serve_listeners, handle, [listener])
        log.info("web UI at %s%s", url, " (private swarm: log in with the token `chunkswarm swarm show` prints)" if state.private else "")
        task_status.started(url)
