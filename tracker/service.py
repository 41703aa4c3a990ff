"""One running tracker: the state and counters its connections share, its timed loops, and its entry point.

:func:`serve_tracker` opens the store and the listeners and runs a
:class:`TrackerService` until cancelled: one task per connection
(``tracker.connection``, or ``tracker.hub`` for sockets when
``TrackerConfig.io`` is ``"epoll"``), the readiness hub's task if there is one,
and the expiry and stats loops.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs
import trio

from common.address import format_address
from common.identity import short_id
from common.manifest import Manifest
from common.wording import plural
from tracker.bittorrent.front import BtFront
from tracker.bittorrent.service import BtAddresses, serve_bittorrent
from tracker.bittorrent.settings import BitTorrentConfig
from tracker.collections import CollectionBook, History
from tracker.config import TrackerConfig
from tracker.connection import Connection, observed_host, serve_connection
from tracker.hub import HubConnection, ReadinessHub
from tracker.limits import Tally
from tracker.private import PrivateTracker
from tracker.publishers import Publishers
from tracker.registry import Registry, check_manifest
from tracker.retention import retention_loop
from tracker.searches import SearchLog
from tracker.store import Store
from tracker.web import serve_web

if TYPE_CHECKING:
    from tracker.shared_store import SharedStore

__all__ = ["serve_tracker", "RunningTracker", "TrackerService"]

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class TrackerService:
    """The registry, the store and the counters that every connection of one tracker shares."""

    config: TrackerConfig
    registry: Registry
    store: Store | SharedStore
    publishers: Publishers
    #: Its key's peer id: the server id a WELCOME proves with capability identity (PROTOCOL.md §8.6).
    tracker_id: bytes = attrs.field(default=attrs.Factory(lambda self: self.config.node_key.peer_id, takes_self=True))
    connections: int = 0
    #: Open connections per network (``common.address.ip_group``), against ``max_connections_per_ip``.
    connections_per_network: Tally = attrs.field(factory=Tally)
    requests: int = 0
    #: Bytes the codecs of all connections hold for requests still arriving (see ``max_buffered``).
    buffered: int = 0
    #: Bytes of replies waiting for clients that do not read as fast as they ask (see ``max_unsent``).
    unsent: int = 0
    started_at: float = attrs.field(factory=trio.current_time)
    #: Serves the sockets when ``config.io`` is ``"epoll"`` (set by ``serve_tracker``);
    #: None: every stream takes the generic path (memory streams, ``io="streams"``).
    hub: ReadinessHub | None = None
    #: A private swarm's TLS and proof (``tracker.private``); None: an open tracker.
    private: PrivateTracker | None = None
    #: Recent searches, from the protocol (LIST_FILES, LOOKUP) and the web UI, for the stats page.
    searches: SearchLog = attrs.field(factory=SearchLog)
    #: Collections (PROTOCOL.md §8.11); ``serve_tracker`` opens the durable one beside the catalogue.
    collections: CollectionBook = attrs.field(factory=lambda: CollectionBook.open(None))
    #: BitTorrent's swarms and settings (``tracker.bittorrent``), kept even while its protocol is off (then empty).
    bittorrent: BtFront = attrs.field(factory=lambda: BtFront.create(BitTorrentConfig(), trio.current_time))

    @classmethod
    def create(
        cls, config: TrackerConfig, store: Store | SharedStore, catalogue: Iterable[Manifest] = (), published: Iterable[tuple[bytes, bytes]] = (),
        registry_type: type[Registry] = Registry,
    ) -> TrackerService:
        """A service whose registry lists ``catalogue`` (the manifests read from ``store``), published by ``published`` (file id, publisher).

        ``registry_type``: ``tracker.shared.SharedRegistry`` for a tracker whose state is shared.
        """
        registry = registry_type(config.peer_timeout, trio.current_time, max_peers_per_ip=config.max_peers_per_ip)
        for manifest in catalogue:
            registry.publish(manifest, checked=True)  # checked before it was written
        publishers = Publishers(config.max_files_per_publisher, config.max_manifest_bytes_per_publisher)
        for file_id, publisher in published:
            if registry.has_file(file_id):
                publishers.add(registry.record(file_id).manifest, publisher)
        private = None if config.swarm is None else PrivateTracker.create(config.swarm, config.node_key)
        bittorrent = BtFront.create(config.bittorrent, trio.current_time)
        return cls(config, registry, store, publishers, private=private, bittorrent=bittorrent)

    def stats(self) -> dict[str, int | float]:
        counters: dict[str, int | float] = dict(self.registry.counts())
        counters["connections"] = self.connections
        counters["requests"] = self.requests
        if self.config.bittorrent.enabled:
            counters.update(self.bittorrent.swarms.counts())
        counters["uptime_s"] = round(trio.current_time() - self.started_at, 3)
        return counters

    async def handle_stream(self, stream: trio.abc.Stream, remote: tuple[str, int]) -> None:
        """Serve one connection from ``remote`` until it closes, misbehaves or idles; always closes ``stream``.

        Never raises (but ``Cancelled``): whatever goes wrong ends this connection only.
        """
        hubbed = self.hub is not None and isinstance(stream, trio.SocketStream)
        await serve_connection(self, stream, remote, HubConnection if hubbed else Connection)

    async def serve_socket(self, stream: trio.SocketStream) -> None:
        """``trio.serve_listeners`` handler: learn the remote address, then :meth:`handle_stream`."""
        try:
            remote = stream.socket.getpeername()
        except OSError:  # reset before we looked
            await trio.aclose_forcefully(stream)
            return
        where = format_address(remote[0], remote[1])
        if not self.config.allow.admits(remote[0]):
            log.warning("refusing %s: outside the allowed address ranges (%s)", where, self.config.allow)
            await trio.aclose_forcefully(stream)
            return
        if self.private is None:  # not through handle_stream: one frame less kept by every idle connection
            await serve_connection(self, stream, (remote[0], remote[1]), Connection if self.hub is None else HubConnection)
            return
        served = await self.private.accept(stream, where)  # TLS streams take the generic path, not the hub's
        if served is None:
            await trio.aclose_forcefully(stream)
            return
        await self.handle_stream(served, (remote[0], remote[1]))

    async def expiry_loop(self) -> None:
        """Drop silent peers, sweeping a few times per ``peer_timeout``."""
        interval = min(self.config.heartbeat_interval, self.config.peer_timeout / 4)
        while True:
            await trio.sleep(interval)
            for peer in self.registry.expire():
                log.info(
                    "peer %s at %s expired (silent for over %gs)",
                    peer.name, format_address(peer.host, peer.port), self.config.peer_timeout,
                )  # fmt: skip

    async def stats_loop(self) -> None:
        """One stats line in the log every ``stats_interval``."""
        previous = self.requests
        while True:
            await trio.sleep(self.config.stats_interval)
            counters = self.stats()
            log.info(
                "stats: %s online, %s, %s, %s, %s served (%d in the last %gs)",
                plural(int(counters["peers"]), "peer"), plural(int(counters["files"]), "file"), plural(int(counters["replicas"]), "replica"),
                plural(int(counters["connections"]), "connection"), plural(int(counters["requests"]), "request"),
                self.requests - previous, self.config.stats_interval,
            )  # fmt: skip
            previous = self.requests

    def check_and_save(self, manifest: Manifest, publisher: bytes | None = None) -> None:
        """Blocking: check a new manifest and commit it to the store (run in a worker thread)."""
        check_manifest(manifest)
        self.store.save(manifest, publisher)


@attrs.frozen
class RunningTracker:
    """What ``serve_tracker`` hands to ``task_status.started``: where it listens, and its counters."""

    host: str
    port: int
    service: TrackerService = attrs.field(repr=False)
    #: Where the web UI answers (``tracker/web``), or None: off, or its port was taken.
    http_url: str | None = None
    #: Where BitTorrent's HTTP and UDP announce listen, if they are on.
    bittorrent: BtAddresses = attrs.field(factory=BtAddresses)

    def stats(self) -> dict[str, int | float]:
        return self.service.stats()


async def serve_tracker(
    config: TrackerConfig, *, task_status: trio.TaskStatus[RunningTracker] = trio.TASK_STATUS_IGNORED, shared: SharedStore | None = None
) -> None:
    """Run a tracker until cancelled; ``task_status.started`` gets a :class:`RunningTracker` once bound.

    ``config.host`` of ``"*"`` or ``""`` listens on every interface, IPv4 and IPv6.
    With ``config.state``, the state is shared in Redis (``tracker.shared``).
    """
    if config.state is not None and shared is None:
        from tracker.shared import open_shared_state  # imports the Redis client only when asked for

        async with open_shared_state(config.state) as opened:
            await serve_tracker(config, task_status=task_status, shared=opened)
        return
    store: Store | SharedStore = shared if shared is not None else await trio.to_thread.run_sync(Store, config.db_path)
    replicator = None
    try:
        if shared is not None:
            position = await shared.log_position()  # before the snapshot: the log from there replays what it may lack
        catalogue = await trio.to_thread.run_sync(lambda: list(store.load()))
        published = await trio.to_thread.run_sync(store.publishers)
        if shared is None:
            service = TrackerService.create(config, store, catalogue, published)
        else:
            from tracker.shared import Replicator, SharedRegistry

            service = TrackerService.create(config, store, catalogue, published, SharedRegistry)
            replicator = Replicator(service, shared, position)
            await replicator.load()
        service.collections.close()
        history = History(config.collection_versions, config.collection_history)
        service.collections = await trio.to_thread.run_sync(CollectionBook.open, config.db_path, history)
        if service.registry.file_count:
            log.info("catalogue of %d files loaded from %s", service.registry.file_count, config.state or config.db_path)
        bind_host = None if config.host in ("", "*") else config.host
        listeners = await trio.open_tcp_listeners(config.port, host=bind_host)
        service.hub = hub = ReadinessHub() if config.io == "epoll" else None
        try:
            async with trio.open_nursery() as nursery:
                if hub is not None:
                    nursery.start_soon(hub.run)
                    # The idle timeout of the connections parked in the hub, within 1/16 of it.
                    nursery.start_soon(hub.expire_idle, config.idle_timeout / 16)
                nursery.start_soon(service.expiry_loop)
                nursery.start_soon(service.stats_loop)
                nursery.start_soon(retention_loop, service)
                if replicator is not None:
                    nursery.start_soon(replicator.run)
                await nursery.start(trio.serve_listeners, service.serve_socket, listeners)
                bt_addresses = BtAddresses()
                if config.bittorrent.enabled:
                    bt_addresses = await nursery.start(serve_bittorrent, service.bittorrent, config.allow.admits, config.io == "epoll")
                bound = [listener.socket.getsockname() for listener in listeners]
                for address in bound:
                    log.info("tracker listening on %s", format_address(observed_host(address[0]), address[1]))
                log.info("tracker node id %s (%s)%s", config.node_key.display, short_id(config.node_key.node_id),
                         "; identified nodes only" if config.require_identity else "")  # fmt: skip
                http_url = None
                if config.http_host is not None:
                    http_url = await nursery.start(serve_web, service, bound[0][1])
                task_status.started(RunningTracker(bound[0][0], bound[0][1], service, http_url, bt_addresses))
        finally:
            if hub is not None:  # every connection task has ended with the nursery
                hub.close()
            service.collections.close()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
        log.info("tracker stopped; catalogue closed")
