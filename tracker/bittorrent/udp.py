"""The UDP announce shell (BEP 15): one socket, one task, each datagram answered through :class:`BtFront`.

Answers are sent without waiting: a datagram the socket buffer has no room
for is dropped, as the network may drop any (the client asks again), so a
flood never blocks the loop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio

from common.address import format_address
from tracker.bittorrent.front import BtFront
from tracker.connection import observed_host

__all__ = ["serve_udp", "open_udp_socket"]

log = logging.getLogger(__name__)

#: The largest datagram read: a scrape of 74 info-hashes is 1,496 bytes.
MAX_DATAGRAM = 2048


async def open_udp_socket(host: str, port: int) -> trio.socket.SocketType:
    """A UDP socket bound to ``host:port``; ``"*"`` or ``""``: every interface, IPv4 and IPv6."""
    if host in ("", "*"):
        sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        await sock.bind(("::", port))
        return sock
    family, kind, proto, _, address = (await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
    sock = trio.socket.socket(family, kind, proto)
    await sock.bind(address)
    return sock


async def serve_udp(
    front: BtFront, admits: Callable[[str], bool], host: str, port: int, *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:  # fmt: skip
    """Serve BEP 15 on ``host:port`` until cancelled; ``task_status`` gets the bound address."""
    sock = await open_udp_socket(host, port)
    with sock:
        bound = sock.getsockname()
        log.info("BitTorrent UDP announce on udp://%s/announce", format_address(observed_host(bound[0]), bound[1]))
        task_status.started((observed_host(bound[0]), bound[1]))
        raw = socket.socket(fileno=sock.fileno(), family=sock.family, type=sock.type)  # for sends that never wait
        try:
            while True:
                try:
                    data, address = await sock.recvfrom(MAX_DATAGRAM)
                except OSError as exc:  # an ICMP error queued for an earlier send: nothing to do with this one
                    log.debug("UDP receive failed: %s", exc)
                    continue
                peer_host = observed_host(address[0])
                if not admits(peer_host):
                    continue
                reply = front.udp_answer(data, peer_host, address[1])
                if reply is not None:
                    try:
                        raw.sendto(reply, address)
                    except OSError as exc:  # full socket buffer, or the route is gone: dropped like any datagram
                        log.debug("UDP answer to %s dropped: %s", format_address(peer_host, address[1]), exc)
        finally:
            raw.detach()
