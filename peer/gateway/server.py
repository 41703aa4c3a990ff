"""``serve_gateway``: the gateway's HTTP server (hypercorn's trio worker) beside a running peer, in the peer's nursery.

The listening socket is made here, before hypercorn starts, so that a port
that is taken fails at once with a clear error, and so that accepted
connections inherit ``TCP_USER_TIMEOUT``: a client that stops reading (or
vanishes) is dropped after ``send_timeout`` seconds of unacknowledged data,
instead of holding its request, its connection and a place under the cap for
as long as the kernel would keep probing it. A slow client holds only its own
request's task: chunks and downloads go on in theirs.
"""

from __future__ import annotations

import ipaddress
import logging
import pathlib
import socket

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from common.address import format_address
from common.errors import StorageError, ValidationError
from peer.gateway.app import Gateway, build_app
from peer.gateway.fetches import Fetches
from peer.gateway.set_upload import SetWrites, Uploads
from peer.gateway.set_versions import SetVersions
from peer.node import Peer

__all__ = ["GatewayConfig", "serve_gateway"]

logger = logging.getLogger(__name__)


@attrs.frozen
class GatewayConfig:
    """Where the gateway listens, where it keeps what it fetches, and its limits."""

    #: Where files fetched on demand are kept (and served from, and seeded, afterwards).
    folder: pathlib.Path = attrs.field(converter=pathlib.Path)
    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=[attrs.validators.ge(0), attrs.validators.le(65535)])
    #: Requests served at once (with HTTP/1.1, the connections with a request under way); more get 503.
    max_requests: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    #: Request headers larger than this get 431 with a reason (hypercorn itself refuses past 64 KiB, with a bare 400).
    max_header_bytes: int = 8192
    #: A client that acknowledges no data for this long is dropped (TCP_USER_TIMEOUT).
    send_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: An idle keep-alive connection is closed after this long.
    keep_alive_timeout: float = 5.0
    #: Who may POST files into sets, and where they go; None: the gateway takes no files.
    writes: SetWrites | None = None


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen_socket(host: str, port: int, send_timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: inherited by every accepted connection
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(send_timeout * 1000))
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StorageError(f"cannot serve HTTP on {format_address(host, port)}: {exc.strerror or exc}") from None
    return sock


async def serve_gateway(peer: Peer, config: GatewayConfig, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the gateway until cancelled; ``task_status.started((host, port))`` once it listens.

    The tracker is told the port (capability ``gateway``, PROTOCOL.md §8.10) at
    this peer's next REGISTER, and at once if it is connected already.
    """
    if peer.config.swarm is not None and not _loopback(config.host):
        # The gateway asks no credentials: a private swarm's files must not be handed to whoever reaches it.
        raise ValidationError(f"in a private swarm the HTTP gateway listens on a loopback address only (127.0.0.1, ::1), not {config.host}")
    await trio.to_thread.run_sync(lambda: config.folder.mkdir(parents=True, exist_ok=True))
    sock = _listen_socket(config.host, config.port, config.send_timeout)
    host, port = sock.getsockname()[:2]
    hyper = Config()
    hyper.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the descriptor from here on
    hyper.keep_alive_timeout = config.keep_alive_timeout
    hyper.h11_max_incomplete_size = 64 * 1024
    hyper.backlog = 128
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("peer.gateway.http")  # its own: hypercorn's "Running on" line is said above, once
    versions = SetVersions(peer)
    uploads = Uploads(peer, versions, config.writes) if config.writes is not None else None
    if uploads is not None:
        await uploads.restore()
    async with trio.open_nursery() as nursery:
        gateway = Gateway(peer, Fetches(peer, config.folder, nursery), versions, uploads, max_requests=config.max_requests,
                          max_header_bytes=config.max_header_bytes)  # fmt: skip
        await nursery.start(serve, build_app(gateway), hyper)
        logger.info("%s: HTTP gateway on http://%s/files/", peer.name, format_address(host, port))
        await peer.set_http_port(port)
        task_status.started((host, port))
