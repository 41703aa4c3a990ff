"""The BitTorrent side's settings: where it listens and how it treats announces (one frozen attrs object)."""

from __future__ import annotations

from typing import Any, Final

import attrs

__all__ = ["BitTorrentConfig", "DEFAULT_NUMWANT", "MAX_NUMWANT"]

#: Peers an announce gets when it does not say (BEP 3 suggests 50) and the most it may ask for.
DEFAULT_NUMWANT: Final = 50
MAX_NUMWANT: Final = 200


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _port(instance: object, attribute: attrs.Attribute[tuple[str, int] | None], value: tuple[str, int] | None) -> None:
    if value is not None and not 0 <= value[1] <= 65535:
        raise ValueError(f"{attribute.name}: port must be 0..65535, got {value[1]}")


@attrs.frozen
class BitTorrentConfig:
    """HTTP and UDP announce (each off while None), intervals in seconds, and the caps.

    The defaults follow opentracker: clients announce every 30 minutes and a
    peer is dropped after 45 without an announce (one and a half intervals:
    one missed announce and a margin).
    """

    http: tuple[str, int] | None = attrs.field(default=None, validator=_port)
    udp: tuple[str, int] | None = attrs.field(default=None, validator=_port)
    interval: int = attrs.field(default=1800, validator=_positive)
    min_interval: int = attrs.field(default=900, validator=_positive)
    peer_timeout: float = attrs.field(default=2700.0, validator=_positive)
    default_numwant: int = attrs.field(default=DEFAULT_NUMWANT, validator=attrs.validators.ge(0))
    max_numwant: int = attrs.field(default=MAX_NUMWANT, validator=attrs.validators.ge(1))
    #: Honour a claimed ``ip=`` (HTTP) or IP field (UDP): only behind a proxy or on a network one trusts,
    #: as it lets a client point downloaders at any host.
    allow_claimed_ip: bool = False
    #: Peers (each an info-hash and peer id) all networks together, one network (an IPv4 address,
    #: an IPv6 /64) and one network in one torrent may have announced; 0: no cap.
    max_peers: int = attrs.field(default=1_000_000, validator=attrs.validators.ge(0))
    max_peers_per_ip: int = attrs.field(default=4096, validator=attrs.validators.ge(0))
    max_peers_per_ip_per_torrent: int = attrs.field(default=16, validator=attrs.validators.ge(0))
    #: HTTP connections one network may hold open at once, and all together.
    max_connections_per_ip: int = attrs.field(default=128, validator=attrs.validators.ge(1))
    max_connections: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    #: Seconds an HTTP connection may wait between requests before it is closed.
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    #: Seconds a UDP connection id is issued for (BEP 15: one minute; accepted for up to two).
    connection_id_lifetime: float = attrs.field(default=60.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.min_interval > self.interval:
            raise ValueError(f"min_interval ({self.min_interval}s) must not exceed interval ({self.interval}s)")
        if self.peer_timeout <= self.interval:
            raise ValueError(f"peer_timeout ({self.peer_timeout:g}s) must exceed interval ({self.interval}s), or every peer expires between announces")
        if self.default_numwant > self.max_numwant:
            raise ValueError(f"default_numwant ({self.default_numwant}) must not exceed max_numwant ({self.max_numwant})")

    @property
    def enabled(self) -> bool:
        return self.http is not None or self.udp is not None
