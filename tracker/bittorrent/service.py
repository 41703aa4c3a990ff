"""The BitTorrent side of a running tracker: its HTTP and UDP shells and its expiry loop, in one nursery."""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from tracker.bittorrent.front import BtFront
from tracker.bittorrent.http import HttpAnnounceServer, serve_http
from tracker.bittorrent.udp import serve_udp
from tracker.hub import ReadinessHub

__all__ = ["BtAddresses", "serve_bittorrent"]

log = logging.getLogger(__name__)


@attrs.frozen
class BtAddresses:
    """Where the BitTorrent side listens (None: that protocol is off)."""

    http: tuple[str, int] | None = None
    udp: tuple[str, int] | None = None


async def expiry_loop(front: BtFront) -> None:
    """Drop peers that missed their announces, sweeping a few times per ``peer_timeout``."""
    interval = min(60.0, front.config.peer_timeout / 4)
    while True:
        await trio.sleep(interval)
        dropped = front.swarms.expire()
        if dropped:
            log.info("%d BitTorrent peers expired (no announce for %gs)", dropped, front.config.peer_timeout)


async def serve_bittorrent(
    front: BtFront, admits: Callable[[str], bool], use_hub: bool, *, task_status: trio.TaskStatus[BtAddresses] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the HTTP and UDP announce the settings ask for until cancelled; ``task_status`` gets where."""
    config = front.config
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry_loop, front)
        http = udp = None
        if config.http is not None:
            server = HttpAnnounceServer(front, admits, ReadinessHub() if use_hub else None)
            http = await nursery.start(serve_http, server, *config.http)
        if config.udp is not None:
            udp = await nursery.start(serve_udp, front, admits, *config.udp)
        task_status.started(BtAddresses(http, udp))
