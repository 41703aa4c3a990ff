"""The tracker's configuration: one frozen attrs object, built by the CLI or by tests."""

from __future__ import annotations

import select
from typing import Final, Literal

import attrs

from common.allow import AllowList
from common.framing import DEFAULT_MAX_FRAME_SIZE
from common.identity import NodeKey
from common.manifest import HASH_SIZE, MAX_CHUNKS, MAX_NAME_BYTES
from common.swarm import SwarmFile
from tracker.bittorrent.settings import BitTorrentConfig

__all__ = ["TrackerConfig", "MIN_FRAME_SIZE", "IoPath", "IO_PATHS", "DEFAULT_IO", "DEFAULT_PEERS_PER_IP", "DEFAULT_CONNECTIONS_PER_IP"]

#: The largest legitimate frame a tracker receives is a PUBLISH of a manifest
#: with MAX_CHUNKS hashes: 16 MiB of hashes plus the name and a few integers.
#: A smaller cap would refuse files the peers are allowed to publish.
MIN_FRAME_SIZE = MAX_CHUNKS * HASH_SIZE + MAX_NAME_BYTES + 128


#: The default caps per network (PROTOCOL.md §7.1): an office or a household behind one
#: NAT has room for 64 peers, and a single client cannot hold more of the tracker.
DEFAULT_PEERS_PER_IP: Final = 64
DEFAULT_CONNECTIONS_PER_IP: Final = 128


#: How a tracker reads and writes its sockets: ``"epoll"``, through one
#: edge-triggered epoll for all of them and directly on their descriptors
#: (``tracker.hub``, Linux only); ``"streams"``, through trio's generic
#: ``receive_some``/``send_all``, the path memory streams take in tests.
IoPath = Literal["epoll", "streams"]
IO_PATHS: Final[tuple[IoPath, ...]] = ("epoll", "streams")
#: The fast path where there is one.
DEFAULT_IO: Final[IoPath] = "epoll" if hasattr(select, "epoll") else "streams"


def _io_path(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in IO_PATHS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(IO_PATHS)}, got {value!r}")
    if value == "epoll" and not hasattr(select, "epoll"):
        raise ValueError(f'{attribute.name}="epoll" needs select.epoll (Linux); use "streams"')


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value!r}")


@attrs.frozen
class TrackerConfig:
    """Everything ``serve_tracker`` needs; times are in seconds.

    ``db_path=None`` keeps the catalogue in an in-memory SQLite database (tests).
    ``peer_timeout`` is how long a registered peer may stay silent before it and
    its replicas are dropped; ``idle_timeout`` is how long one connection may go
    without completing a request before it is closed (the peer itself stays
    registered until ``peer_timeout``, unless that connection agreed on
    ``withdraw`` and registered it: then the peer goes with the connection,
    PROTOCOL.md §8.5). ``io`` picks how sockets are read and written (``IO_PATHS``).
    """

    host: str = "127.0.0.1"
    port: int = attrs.field(default=7070, validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(65535)))
    db_path: str | None = None
    #: The tracker's long-lived key (issue 12): the app keeps it beside the database; a fresh one otherwise.
    node_key: NodeKey = attrs.field(factory=NodeKey.generate, eq=False, repr=False)
    heartbeat_interval: float = attrs.field(default=30.0, validator=_positive)
    peer_timeout: float = attrs.field(default=90.0, validator=_positive)
    idle_timeout: float = attrs.field(default=120.0, validator=_positive)
    max_connections: int = attrs.field(default=4096, validator=_at_least_one)
    #: Connections one network (an IPv4 address, an IPv6 /64) may hold open at once: one
    #: client cannot take every connection. Each peer keeps one, plus a few for ls and get.
    max_connections_per_ip: int = attrs.field(default=DEFAULT_CONNECTIONS_PER_IP, validator=_at_least_one)
    #: Peer ids one network may have registered at once: one client cannot fill the swarm.
    max_peers_per_ip: int = attrs.field(default=DEFAULT_PEERS_PER_IP, validator=_at_least_one)
    max_holders: int = attrs.field(default=50, validator=_at_least_one)
    max_frame_size: int = attrs.field(default=DEFAULT_MAX_FRAME_SIZE, validator=attrs.validators.ge(MIN_FRAME_SIZE))
    stats_interval: float = attrs.field(default=60.0, validator=_positive)
    #: Memory all connections together may hold for requests still arriving; beyond it a
    #: connection receiving a large frame is refused with BUSY (at least one largest frame fits).
    max_buffered: int = attrs.field(default=64 * 1024 * 1024, validator=attrs.validators.ge(MIN_FRAME_SIZE))
    #: Replies all connections together may hold for clients that have not read them yet;
    #: beyond it LIST_FILES (megabytes built per request) is refused with BUSY. A cached
    #: manifest counts for every connection sending it, though they share its bytes.
    max_unsent: int = attrs.field(default=256 * 1024 * 1024, validator=attrs.validators.ge(MIN_FRAME_SIZE))
    io: IoPath = attrs.field(default=DEFAULT_IO, validator=_io_path)
    #: Seconds a published file stays listed once no peer holds it (``tracker/retention.py``); 0: for ever.
    retention: float = attrs.field(default=30 * 86400.0, validator=attrs.validators.ge(0))
    #: Admit identified nodes only (capability identity, PROTOCOL.md §8.6): others get ERROR IDENTITY_REQUIRED.
    require_identity: bool = False
    #: Per publisher (a node id; an unidentified one by IP, IPv6 by /64): files and manifest bytes it may publish.
    max_files_per_publisher: int = attrs.field(default=10_000, validator=_at_least_one)
    max_manifest_bytes_per_publisher: int = attrs.field(default=64 * 1024 * 1024, validator=_at_least_one)
    #: A private swarm (``tracker.private``): TLS only, members only. None: an open tracker.
    swarm: SwarmFile | None = None
    #: Clients from other addresses are refused at accept (``--allow``); empty: any address.
    allow: AllowList = attrs.field(factory=AllowList)
    #: The web UI and JSON API (``tracker/web``) listen on this host; None: no web UI.
    http_host: str | None = None
    #: Their port; None: the protocol port + 1 (with port 0, a free one). Taken: a warning, no web UI.
    http_port: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(65535))))
    #: HTTP connections open at once; one more is closed at accept (the protocol port's descriptors stay free).
    max_http_connections: int = attrs.field(default=256, validator=_at_least_one)
    #: Shared state (``tracker.shared``): ``redis://HOST:PORT/N``, where several trackers keep one swarm. None: in
    #: memory, the catalogue in SQLite (``db_path``).
    state: str | None = None
    #: Advertise the tracker on the LAN by mDNS (``tracker/mdns.py``); the ``tracker`` command's default, not ``serve_tracker``'s.
    mdns: bool = False
    #: BitTorrent's tracker protocol beside the native one (``tracker.bittorrent``): off unless an address is set.
    bittorrent: BitTorrentConfig = attrs.field(factory=BitTorrentConfig)
    #: Versions of each collection kept (``tracker.collections.History``): the last ``collection_versions``, and all
    #: stored in the last ``collection_history`` seconds; older ones are pruned.
    collection_versions: int = attrs.field(default=100, validator=_at_least_one)
    collection_history: float = attrs.field(default=900.0, validator=attrs.validators.ge(0))

    def __attrs_post_init__(self) -> None:
        if self.peer_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"peer_timeout ({self.peer_timeout:g}s) must exceed heartbeat_interval ({self.heartbeat_interval:g}s), "
                "or every peer would expire between two heartbeats"
            )
        if self.idle_timeout <= self.heartbeat_interval:
            # A peer's connection would be closed between two heartbeats, and a peer that
            # agreed on withdraw goes with its connection (PROTOCOL.md §8.5).
            raise ValueError(
                f"idle_timeout ({self.idle_timeout:g}s) must exceed heartbeat_interval ({self.heartbeat_interval:g}s), "
                "or every peer's connection would be closed between two heartbeats"
            )
