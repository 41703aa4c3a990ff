"""``chunkswarm tracker``'s BitTorrent options (``--bt-http``, ``--bt-udp`` ...), collapsed into one :class:`BitTorrentConfig`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from common.address import parse_address
from common.errors import ValidationError
from tracker.bittorrent.settings import MAX_NUMWANT, BitTorrentConfig

__all__ = ["bittorrent_options"]

_DEFAULTS = BitTorrentConfig()


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_address(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


_OPTIONS = [
    click.option("--bt-http", callback=_address, metavar="HOST:PORT", default=None,
                 help="Serve BitTorrent HTTP announce and scrape (http://HOST:PORT/announce) on this address; off unless given."),
    click.option("--bt-udp", callback=_address, metavar="HOST:PORT", default=None,
                 help="Serve BitTorrent UDP announce and scrape (udp://HOST:PORT) on this address; off unless given."),
    click.option("--bt-interval", type=click.IntRange(min=1), default=_DEFAULTS.interval, show_default=True,
                 help="Seconds BitTorrent clients are told to wait between announces."),
    click.option("--bt-peer-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Seconds without an announce before a BitTorrent peer is dropped  [default: 1.5 intervals]"),
    click.option("--bt-max-numwant", type=click.IntRange(min=1, max=1000), default=MAX_NUMWANT, show_default=True,
                 help="Most peers one announce gets (clients asking for more get this many)."),
    click.option("--bt-allow-claimed-ip", is_flag=True,
                 help="Hand out the address a client claims (ip=) rather than the one observed: only behind a trusted proxy."),
    click.option("--bt-max-peers-per-ip", type=click.IntRange(min=0), default=_DEFAULTS.max_peers_per_ip, show_default=True,
                 help="BitTorrent peers one address (an IPv6 /64) may announce over all torrents (0: no cap)."),
    click.option("--bt-max-peers-per-ip-per-torrent", type=click.IntRange(min=0), default=_DEFAULTS.max_peers_per_ip_per_torrent,
                 show_default=True, help="BitTorrent peers one address (an IPv6 /64) may announce in one torrent (0: no cap)."),
]  # fmt: skip


def bittorrent_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds the ``--bt-*`` options; the command receives them as ``bittorrent``, a :class:`BitTorrentConfig`."""

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        interval = kwargs.pop("bt_interval")
        timeout = kwargs.pop("bt_peer_timeout")
        max_numwant = kwargs.pop("bt_max_numwant")
        try:
            kwargs["bittorrent"] = BitTorrentConfig(
                http=kwargs.pop("bt_http"),
                udp=kwargs.pop("bt_udp"),
                interval=interval,
                min_interval=max(1, min(_DEFAULTS.min_interval, interval // 2)),
                peer_timeout=timeout if timeout is not None else 1.5 * interval,
                max_numwant=max_numwant,
                default_numwant=min(_DEFAULTS.default_numwant, max_numwant),
                allow_claimed_ip=kwargs.pop("bt_allow_claimed_ip"),
                max_peers_per_ip=kwargs.pop("bt_max_peers_per_ip"),
                max_peers_per_ip_per_torrent=kwargs.pop("bt_max_peers_per_ip_per_torrent"),
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        return func(**kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
