"""A peer command started without ``--tracker`` (and without CHUNKSWARM_TRACKER) uses the tracker on this machine
(127.0.0.1:7070) when one listens there, as before; otherwise it looks for one on the LAN by mDNS, says which it
found (and which, if several), and falls back to 127.0.0.1:7070 when none answers within ``DISCOVERY_TIMEOUT`` seconds.
"""

from __future__ import annotations

import socket

import click

from common.address import TRACKER_PORT
from peer.discovery import DISCOVERY_TIMEOUT, browse, choose

__all__ = ["find_tracker", "FALLBACK"]

FALLBACK = ("127.0.0.1", TRACKER_PORT)
#: A tracker on this machine answers a connection at once.
_LOCAL_PROBE = 0.3


def find_tracker(*, private: bool, timeout: float = DISCOVERY_TIMEOUT) -> tuple[str, int]:
    """FALLBACK if a tracker listens there; else the address of the tracker found on the LAN (told on stderr), else FALLBACK."""
    try:
        with socket.create_connection(FALLBACK, timeout=_LOCAL_PROBE):
            return FALLBACK  # a tracker on this machine: no need to ask the LAN
    except OSError:
        pass
    try:
        found = browse(timeout)
    except OSError as exc:  # no network to browse (no multicast route, no interface up)
        click.echo(f"cannot look for a tracker on the LAN ({exc.strerror or exc}); trying {FALLBACK[0]}:{FALLBACK[1]}", err=True)
        return FALLBACK
    chosen = choose(found, private=private)
    if chosen is None:
        click.echo(f"no tracker answered on the LAN (mDNS, {timeout:g} s); trying {FALLBACK[0]}:{FALLBACK[1]} "
                   "(give --tracker HOST[:PORT] or set CHUNKSWARM_TRACKER)", err=True)  # fmt: skip
        return FALLBACK
    if len(found) > 1:
        others = "; ".join(tracker.describe() for tracker in found if tracker != chosen)
        click.echo(f"found {len(found)} trackers on the LAN: using {chosen.describe()}; also {others} (give --tracker to choose)",
                   err=True)  # fmt: skip
    else:
        click.echo(f"found a tracker on the LAN: {chosen.describe()}", err=True)
    return chosen.host, chosen.port
