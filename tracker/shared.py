"""Several tracker processes, one swarm: each keeps a replica of the state, Redis holds the truth and the log.

The hub's fast path answers from the process's own
:class:`~tracker.registry.Registry`, synchronously, as with the embedded
state: nothing on the request path waits for Redis. Here:

* :class:`SharedRegistry` is that registry, noting each mutation a request
  makes (register, deregister or release, announce, withdraw) as an event in
  memory, and each peer a request touched (a sign of life);
* :class:`Replicator` writes the events to Redis off the request path, as soon
  as the previous write has returned (so under load they go in batches, one
  transaction each: a log entry plus the snapshot's keys, ``tracker.shared_store``),
  and the signs of life every :data:`SEEN_INTERVAL`; it tails the log
  (``XREAD BLOCK``) and applies the other processes' events to this replica.
  Publishes, unpublishes and retention are written by the store itself before
  the reply, as the embedded store commits before it.

What a client sees: a request is answered from the replica of the process it
asks; what it changed reaches the others one Redis round trip or two later
(a few milliseconds on one host; ``tests/test_tracker_shared.py`` checks a
register at A is found at B, a publish at A listed at B). A peer is live at a
process while some process has seen it within ``peer_timeout`` (signs of
life travel every :data:`SEEN_INTERVAL`), so one that stops heartbeating
expires at every process. Concurrent writers are not serialised: two
processes accepting the same peer id at once, or the same publisher's quota
from two processes within a round trip, end as the log's later entry says.

Redis unreachable: the tracker says so in its log once, keeps answering
from its replica and keeps its own changes (up to :data:`MAX_PENDING` events)
to write when Redis is back; PUBLISH and UNPUBLISH are refused with ERROR
INTERNAL (``tracker.handlers``) until then. A tracker cannot start without it.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import attrs
import coredis
import coredis.exceptions
import trio

from common.chunkset import ChunkSet, Ranges
from common.errors import StorageError, TrackerError, ValidationError
from common.manifest import Manifest
from tracker.records import Peer, Replica, bits_mask
from tracker.registry import Registry
from tracker.shared_store import SharedStore, parse_state_url

if TYPE_CHECKING:
    from tracker.service import TrackerService

__all__ = ["SharedRegistry", "Replicator", "open_shared_state", "SEEN_INTERVAL", "MAX_PENDING"]

log = logging.getLogger(__name__)

#: Seconds between two writes of the peers requests touched (their signs of life for the other processes).
SEEN_INTERVAL: Final = 1.0
#: Events kept for Redis while it is unreachable; beyond, the oldest are dropped (and the log says so).
MAX_PENDING: Final = 1_000_000
#: Milliseconds an XREAD waits for the others' events before asking again.
READ_BLOCK_MS: Final = 1000
#: Seconds between two attempts to reach Redis again.
RETRY_INTERVAL: Final = 0.5
_ERRORS: Final = (coredis.exceptions.RedisError, OSError, StorageError)


def _mask_bytes(replica: Replica | None) -> bytes | None:
    if replica is None:
        return None
    mask = replica.mask
    return mask.to_bytes((mask.bit_length() + 7) // 8, "little")


@attrs.define(eq=False)
class SharedRegistry(Registry):
    """A :class:`Registry` that notes the mutations requests make, for :class:`Replicator` to write to Redis.

    Only calls from requests are noted: the replicator applies the other
    processes' events through :class:`Registry`'s own methods. Costs: an
    append to a deque per mutation, a set insertion per request that touches a peer.
    """

    pending: deque[list[Any]] = attrs.field(init=False, factory=lambda: deque(maxlen=MAX_PENDING))
    touched: set[bytes] = attrs.field(init=False, factory=set)
    #: Set when ``pending`` gains an event: the writer wakes.
    wake: trio.Event = attrs.field(init=False, factory=trio.Event)

    def _note(self, event: list[Any]) -> None:
        self.pending.append(event)
        self.wake.set()

    def register(
        self, peer_id: bytes, host: str, port: int, connection: object | None = None, node: bytes | None = None,
        http_port: int | None = None,
    ) -> tuple[Peer, bool]:
        peer, new = super().register(peer_id, host, port, connection, node, http_port)
        self._note(["R", peer_id, host, port, node, http_port])
        return peer, new

    def peer(self, peer_id: bytes, host: str, port: int | None = None, node: bytes | None = None) -> Peer:
        found = super().peer(peer_id, host, port, node)
        self.touched.add(peer_id)
        return found

    def deregister(self, peer_id: bytes, host: str, port: int | None = None, node: bytes | None = None) -> Peer | None:
        peer = super().deregister(peer_id, host, port, node)
        if peer is not None:
            self._note(["D", peer_id])
        return peer

    def release(self, peer_id: bytes, connection: object) -> Peer | None:
        peer = super().release(peer_id, connection)
        if peer is not None:
            self._note(["D", peer_id])
        return peer

    def announce(self, peer: Peer, file_id: bytes, ranges: Ranges) -> Replica | None:
        replica = super().announce(peer, file_id, ranges)
        self._note(["M", peer.peer_id, file_id, _mask_bytes(replica)])
        return replica

    def withdraw(self, peer: Peer, file_id: bytes, ranges: Ranges) -> Replica | None:
        replica = super().withdraw(peer, file_id, ranges)
        self._note(["M", peer.peer_id, file_id, _mask_bytes(replica)])
        return replica


@attrs.define(eq=False)
class Replicator:
    """Writes this process's events to Redis and applies the others' to its registry: :meth:`run` does both."""

    service: TrackerService
    store: SharedStore
    #: The id of the last log entry applied (or the position the snapshot was loaded at).
    position: bytes = b"0-0"
    #: Whether the last write or read failed: the log says so once, and once when it is back.
    down: bool = False
    applied: int = 0

    @property
    def registry(self) -> SharedRegistry:
        registry = self.service.registry
        assert isinstance(registry, SharedRegistry)
        return registry

    async def load(self) -> None:
        """Load the peers and replicas of the snapshot into the registry (the catalogue came through the store)."""
        registry = self.registry
        loaded = 0
        for peer_id, host, port, node, http_port, replicas in await self.store.load_peers(self.service.config.peer_timeout):
            self._register(peer_id, host, port, node, http_port)
            for file_id, mask in replicas.items():
                self._set_chunks(peer_id, file_id, mask)
            loaded += 1
        if loaded or registry.file_count:
            log.info("shared state at %s: %d peers, %d files loaded", self.store.url, registry.peer_count, registry.file_count)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.write_loop)
            nursery.start_soon(self.seen_loop)
            nursery.start_soon(self.read_loop)

    # -- writing ---------------------------------------------------------------------
    async def write_loop(self) -> None:
        registry = self.registry
        while True:
            await registry.wake.wait()
            registry.wake = trio.Event()
            while registry.pending:
                batch = list(registry.pending)
                try:
                    await self.store.write(batch)
                except _ERRORS as exc:
                    self._failed("write to", exc, len(batch))
                    await trio.sleep(RETRY_INTERVAL)
                    continue
                for _ in range(len(batch)):  # what came meanwhile stays for the next batch
                    registry.pending.popleft()
                self._back()

    async def seen_loop(self) -> None:
        """Every SEEN_INTERVAL: the peers requests touched, as one event; and the snapshot's expired peers forgotten."""
        registry = self.registry
        timeout = self.service.config.peer_timeout
        while True:
            await trio.sleep(min(SEEN_INTERVAL, timeout / 4))
            touched, registry.touched = registry.touched, set()
            if touched:
                live = [peer_id for peer_id in touched if registry.get_peer(peer_id) is not None]
                registry._note(["S", live])
            try:
                await self.store.expire(self.store.clock() - timeout)
            except _ERRORS as exc:
                self._failed("expire peers in", exc, len(registry.pending))

    def _failed(self, what: str, exc: BaseException, waiting: int) -> None:
        if not self.down:
            self.down = True
            log.error("shared state at %s unreachable (cannot %s it: %s): serving from this tracker's copy, %d changes waiting; "
                      "publishing refused until it is back", self.store.url, what, exc or type(exc).__name__, waiting)  # fmt: skip

    def _back(self) -> None:
        if self.down:
            self.down = False
            log.warning("shared state at %s reachable again", self.store.url)

    # -- reading ---------------------------------------------------------------------
    async def read_loop(self) -> None:
        while True:
            try:
                entries = await self.store.read_log(self.position, READ_BLOCK_MS)
            except _ERRORS as exc:
                self._failed("read the log of", exc, len(self.registry.pending))
                await trio.sleep(RETRY_INTERVAL)
                continue
            self._back()
            for entry_id, origin, events in entries:
                self.position = entry_id
                if origin == self.store.origin:
                    continue
                for event in events:
                    try:
                        self.apply(event)
                    except (TrackerError, ValidationError, ValueError, TypeError, IndexError) as exc:
                        log.warning("skipping a shared-state event %r: %s", event[0], exc)
                self.applied += 1

    def apply(self, event: list[Any]) -> None:
        """Apply another process's event to this replica, as the log orders it (idempotent: loading may replay some)."""
        registry, kind = self.registry, event[0]
        if kind == "S":
            for peer_id in event[1]:
                peer = registry.get_peer(peer_id)
                if peer is not None:
                    try:
                        Registry.peer(registry, peer_id, peer.host, None, peer.node)  # a sign of life: seen now
                    except TrackerError:
                        pass  # expired here meanwhile
        elif kind == "R":
            self._register(*event[1:6])
        elif kind == "D":
            peer = registry.get_peer(event[1])
            if peer is not None:
                Registry.deregister(registry, peer.peer_id, peer.host, None, peer.node)
        elif kind == "M":
            self._set_chunks(event[1], event[2], event[3])
        elif kind == "P":
            manifest = Manifest.from_record(event[1])
            Registry.publish(registry, manifest, checked=True)
            if event[2] is not None:
                self.service.publishers.add(registry.record(manifest.file_id).manifest, event[2])
        elif kind == "U":
            file_id, publisher, drop = event[1:4]
            if registry.has_file(file_id):
                manifest = registry.record(file_id).manifest
                if self.service.publishers.remove(manifest, publisher) and drop:
                    Registry.unlist(registry, file_id)
        elif kind == "X":
            for file_id in event[1]:
                manifest_or_none = Registry.unlist(registry, file_id)
                if manifest_or_none is not None:
                    self.service.publishers.forget(manifest_or_none)

    def _register(self, peer_id: bytes, host: str, port: int, node: bytes | None, http_port: int | None = None) -> None:
        """The peer as another process registered it: the latest registration, wherever it was, decides."""
        registry = self.registry
        peer = registry.get_peer(peer_id)
        if peer is not None and (peer.host, peer.node) != (host, node):
            Registry.deregister(registry, peer_id, peer.host, None, peer.node)
        try:
            Registry.register(registry, peer_id, host, port, None, node, http_port)
        except TrackerError as exc:  # this replica's cap of peers per network: it counts them all
            log.debug("peer %s registered elsewhere is not kept here: %s", peer_id.hex()[:16], exc)

    def _set_chunks(self, peer_id: bytes, file_id: bytes, mask_bytes: bytes | None) -> None:
        registry = self.registry
        peer = registry.get_peer(peer_id)
        if peer is None or not registry.has_file(file_id):
            return
        record = registry.record(file_id)
        count = record.manifest.chunk_count
        wanted = -1 if mask_bytes is None else int.from_bytes(mask_bytes, "little")
        slot = peer.slots.get(record.seq)
        held = -1 if slot is None else bits_mask(record.parts[2 * slot + 1])
        if wanted == held:
            return
        if wanted < 0:  # no replica: withdraw all it holds
            Registry.withdraw(registry, peer, file_id, ChunkSet.full(count).ranges())
            return
        if held > 0 and held & ~wanted:
            Registry.withdraw(registry, peer, file_id, ChunkSet(count, held & ~wanted).ranges())
        Registry.announce(registry, peer, file_id, ChunkSet(count, wanted & ~max(held, 0)).ranges())


@asynccontextmanager
async def open_shared_state(url: str) -> AsyncIterator[SharedStore]:
    """A :class:`SharedStore` on the Redis at ``url``; ``StorageError`` when it cannot be reached."""
    try:
        host, port, db = parse_state_url(url)
    except ValueError as exc:
        raise StorageError(str(exc)) from None
    client: coredis.Redis[bytes] = coredis.Redis(host=host, port=port, db=db, decode_responses=False)
    origin = os.urandom(8)
    failure = ""
    try:
        async with client:
            try:
                await client.ping()
            except (coredis.exceptions.RedisError, OSError) as exc:
                failure = str(exc) or type(exc).__name__  # raised once out of the client's task group, not inside it
            if not failure:
                yield SharedStore(client, url, origin)
    except* (coredis.exceptions.RedisError, OSError) as group:
        failure = "; ".join(str(exc) or type(exc).__name__ for exc in group.exceptions)
    if failure:
        raise StorageError(f"cannot reach the shared state at {url}: {failure}")
