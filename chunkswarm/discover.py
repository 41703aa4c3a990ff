"""A peer command started without ``--tracker`` (and without CHUNKSWARM_TRACKER) looks for a tracker on the LAN by mDNS.

It says which it found (and which, if several), and falls back to
127.0.0.1:7070 when none answers within ``DISCOVERY_TIMEOUT`` seconds.
"""

from __future__ import annotations

import click

from common.address import TRACKER_PORT
from peer.discovery import DISCOVERY_TIMEOUT, browse, choose

__all__ = ["find_tracker", "FALLBACK"]

FALLBACK = ("127.0.0.1", TRACKER_PORT)


def find_tracker(*, private: bool, timeout: float = DISCOVERY_TIMEOUT) -> tuple[str, int]:
    """The address of the tracker found on the LAN (told on stderr), else FALLBACK."""
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
