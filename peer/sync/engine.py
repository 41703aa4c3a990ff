"""The loop that keeps a folder in step with its collection: ``chunkswarm sync DIR --collection NAME``.

::

    SyncFolder.run
    ├── watcher      file-system events (``watchfiles``), debounced: a scan is due
    ├── rescanner    a scan every ``rescan_interval`` (what events miss: another mount, a lost event)
    ├── listener     WATCH_COLLECTION long polls: another node's version, within milliseconds
    ├── presence     which of the collection's nodes the tracker lists as holders (online, last seen)
    └── worker       one cycle at a time: scan, merge the current version, apply, publish

Every node syncing NAME is an owner of the collection (the first creates it,
listing the keys it was told to ``--allow``). A cycle scans (only changed
files are hashed; new ones are published to the tracker and served), fetches
the current version, merges it with the index (:func:`common.sync_merge.reconcile`),
applies what others changed (``peer/sync/apply.py``) and, if this node has
anything new, publishes the next version on top of the current one:
compare-and-swap on the parent root; on :class:`CollectionConflict` (another
node published first) it fetches, merges and tries again.
"""

from __future__ import annotations

import logging
import pathlib
import time

import attrs
import trio

from common.capabilities import COLLECTIONS
from common.collection import CollectionVersion, Entry, check_successor, decode_version, encode_version, sign_version
from common.errors import ChunkswarmError, CollectionConflict, CollectionRefused, TrackerError
from common.framing import ErrorCode
from common.identity import node_id
from common.manifest import ZERO_HASH
from common.messages import Hello
from common.sync_merge import Plan, expire_tombstones, reconcile
from peer.collections import fetch_following, publish_collection, watch_collection
from peer.node import Peer
from peer.storage.manifest_cache import ManifestCache
from peer.sync.apply import Applier
from peer.sync.beneath import Root
from peer.sync.index import INDEX_FILE, Index
from peer.sync.local import LocalSide
from peer.sync.state import StateFolder
from peer.sync.status import STATUS_FILE, holders_now, status_encoder, taken_line
from peer.sync.watch import watch_folder
from peer.tracker_client import open_query_link

__all__ = ["SyncConfig", "SyncFolder", "short_node_of"]

logger = logging.getLogger(__name__)

#: How long one WATCH_COLLECTION waits for a change before it is asked again.
_WATCH_TIMEOUT = 20.0
#: Paths left untaken are tried again after this long, doubled at each failure up to _LAST_RETRY.
_FIRST_RETRY = 0.5
_LAST_RETRY = 10.0
#: Tries of one publish against newer versions before the cycle is left to the next wake-up.
_PUBLISH_TRIES = 20
#: Many new files are published in versions of this many changes at first, twice as many each time up to _LAST_SCAN_STEP.
_FIRST_SCAN_STEP = 1000
_LAST_SCAN_STEP = 4000
#: Bound on the index's save when the node stops.
_SAVE_ON_STOP = 10.0
#: The version last merged, in the state folder.
_VERSION_FILE = "version"


def short_node_of(public_key: bytes) -> bytes:
    """The 8 bytes that name a node in version vectors and ``modified_by``: its node id's first bytes."""
    return node_id(public_key)[:8]


@attrs.frozen
class SyncConfig:
    root: pathlib.Path
    collection: str
    #: Public keys of the nodes this node makes owners of the collection (``--allow``).
    allow: tuple[bytes, ...] = ()
    rescan_interval: float = 60.0
    #: Events are gathered this long before a scan (an editor's save is several events).
    debounce: float = 0.05
    fsync: bool = True
    #: Seconds between the checks of which nodes are online.
    presence_interval: float = 5.0


@attrs.define(eq=False)
class SyncFolder:
    """A folder kept in step with a collection by ``peer``; see the module docstring."""

    peer: Peer
    config: SyncConfig
    #: ``.chunkswarm`` in the folder, written beneath it (``peer/sync/state.py``).
    state: StateFolder = attrs.field(init=False)
    index: Index = attrs.field(init=False)
    local: LocalSide = attrs.field(init=False)
    applier: Applier = attrs.field(init=False)
    me: bytes = attrs.field(init=False)
    #: The latest version seen (by the listener, perhaps not merged yet).
    current: CollectionVersion | None = None
    #: The latest version merged, checked step by step from the first: the next is checked against it.
    kept: CollectionVersion | None = None
    _scan_due: bool = True
    _wake: trio.Event = attrs.field(factory=trio.Event)
    #: The collection's nodes (short node ids) -> when last seen online (wall clock seconds; 0: never).
    nodes: dict[bytes, float] = attrs.field(factory=dict)
    online: set[bytes] = attrs.field(factory=set)
    #: Cycles done, for tests and the status file.
    cycles: int = 0
    _nursery: trio.Nursery | None = None
    #: True while the listener's watch is up: then it tells of every new version.
    _listening: bool = False
    _retry_pending: bool = False
    _retry_delay: float = 0.5
    #: Changed files a scan hashes before this node publishes a version of them (then it scans on).
    _scan_step: int = _FIRST_SCAN_STEP
    #: Set when the tracker refused this node's version: it is not an owner (yet); it only takes others' changes.
    refused: str = ""
    #: Status files are written one at a time, in the order their snapshots were taken.
    _status_lock: trio.Lock = attrs.field(factory=trio.Lock)

    def __attrs_post_init__(self) -> None:
        self.me = short_node_of(self.peer.config.node_key.public_key)
        root = self.config.root
        root.mkdir(parents=True, exist_ok=True)  # (the folder is the user's path; what is below it is opened beneath it)
        self.state = StateFolder(Root(root))
        self.state.check()  # (refuses a .chunkswarm that is a link, or not a folder)
        self.index = Index.read(self.state)
        cache = ManifestCache(self.state.path / "manifests", self.state.sub("manifests"))
        self.state.sub("staging")  # (checked before each cycle: downloads are written there by path, in apply.py)
        self.local = LocalSide(self.peer, root, self.index, self.me, cache)
        self.applier = Applier(self.local, fsync=self.config.fsync)
        try:
            kept = self.state.read(_VERSION_FILE)
            self.kept = decode_version(kept) if kept is not None else None
        except ChunkswarmError as exc:
            logger.warning("%s: the version kept is unreadable (%s); the chain is checked from its first version", root, exc)
        if self.kept is not None and (self.kept.name != self.config.collection or self.kept.root != self.index.root):
            self.kept = None  # kept for another collection, or not the one the index reflects
        self.current = self.kept

    def wake(self, *, scan: bool = False, paths: set[str] | None = None) -> None:
        if scan:
            self.local.stale(paths)  # the folder changed (at paths, if known): listed again, not taken up where the last scan stopped
        self._scan_due = self._scan_due or scan
        self._wake.set()

    async def run(self) -> None:
        """Keep the folder in step until cancelled; the index is saved on the way out."""
        self.wake(scan=True)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = self.applier.nursery = nursery
                nursery.start_soon(self._watcher)
                nursery.start_soon(self._rescanner)
                nursery.start_soon(self._listener)
                nursery.start_soon(self._presence)
                await self._worker()
        finally:
            # Stopped (SIGTERM cancels this) mid-cycle, files may have been taken or removed since the last save:
            # without them in the saved index, the next run would scan a file taken here, then deleted elsewhere
            # while this node was away, as new here, and bring it back. Every write is recorded as soon as its
            # worker thread returns (those are never abandoned), so the index matches the folder here.
            with trio.move_on_after(_SAVE_ON_STOP) as scope:
                scope.shield = True
                try:
                    await self._save()
                except ChunkswarmError as exc:  # (not raised over the cancellation: the next run rescans)
                    logger.warning("%s: cannot save the sync index: %s", self.config.root, exc)
            self.local.folder.close()  # (opened again if this folder is run again)
            self.state.close(root=True)

    # -- the worker ------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.cycle()
            except ChunkswarmError as exc:
                logger.warning("sync of %s: %s; trying again shortly", self.config.root, exc)
                await trio.sleep(1.0)
                self.wake(scan=True)

    async def cycle(self) -> None:
        """Scan if due, merge the current version, apply, publish."""
        await trio.to_thread.run_sync(self.state.check)  # (staging/ is used by path: not through a link)
        if self._scan_due:
            self._scan_due = False
            self.applier.changed_locally = False
            started = trio.current_time()
            changed = await self.local.scan(limit=self._scan_step)
            if self.local.more:  # published in steps: the other nodes start on the first files while this one hashes the rest
                self._scan_due = True
                self._scan_step = min(self._scan_step * 2, _LAST_SCAN_STEP)
            else:
                self._scan_step = _FIRST_SCAN_STEP
            if changed:
                logger.info(
                    "%s: %d local change%s (scanned in %.2f s)", self.config.collection, changed, "" if changed == 1 else "s", trio.current_time() - started
                )
        remote = await self._fetch()
        for _ in range(_PUBLISH_TRIES):
            entries = {entry.path: entry for entry in remote.entries} if remote is not None else {}
            plan = reconcile(self.index.entries, self.index.dirty, entries, self.me)
            for note in plan.conflicts:
                logger.warning("conflict: %s", note)
            started = trio.current_time()
            left = await self.applier.apply(plan)
            if (line := taken_line(plan, trio.current_time() - started, left)) is not None:
                logger.info("%s: %s", self.config.collection, line)
            if not left:
                self._resolved(plan)
            if remote is not None:
                self._merged(remote)
            if self.applier.changed_locally:
                self.wake(scan=True)  # a file changed here under a remote change: scanned first, then merged again
            self._retry(left)
            if not self.index.dirty and remote is not None:
                break  # (no version yet: this node creates the collection, empty or not)
            published = await self._publish(remote, plan)
            if published is not None:
                self._merged(published)
                break
            if self.refused:
                break
            remote = await self._fetch()
        self.cycles += 1
        await self._save()
        if self._scan_due:
            self._wake.set()

    async def _fetch(self) -> CollectionVersion | None:
        """The current version, each step since the one kept checked (signed by an owner of the one before)."""
        current, kept = self.current, self.kept
        if current is not None and self._listening:
            # The listener's version: used as it is when it is the one kept, or the next one (checked here).
            if kept is not None and current.root == kept.root:
                return kept
            if (kept is None and current.sequence == 1) or (kept is not None and current.sequence == kept.sequence + 1):
                check_successor(kept, current)
                return current
        return await fetch_following(self.peer.tracker, self.config.collection, kept)

    def _resolved(self, plan: Plan) -> None:
        """The entries ``plan`` publishes are what the folder holds now: recorded, to be published.

        Only once the whole plan is applied: a conflict is published whole (the entry that keeps the
        name with the copy of the other), or not yet (the next cycle resolves it again, the same way).
        """
        index = self.index
        for entry in plan.publish:
            held = index.entries.get(entry.path)
            if held is not None and held.file_id == entry.file_id and entry.path in index.stats:
                index.record(entry, index.stats[entry.path], dirty=True)

    def _retry(self, left: int) -> None:
        """Paths not taken (no holder online, a refusal): tried again later, each time later up to 10 s."""
        if not left:
            self._retry_delay = _FIRST_RETRY
            return
        if self._nursery is not None and not self._retry_pending:
            self._retry_pending = True
            delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, _LAST_RETRY)
            self._nursery.start_soon(self._retry_later, delay)

    async def _retry_later(self, delay: float) -> None:
        await trio.sleep(delay)
        self._retry_pending = False
        self.wake()

    def _merged(self, version: CollectionVersion) -> None:
        self.kept = version
        self.applier.ahead.merged(version.sequence)
        if self.current is None or version.sequence >= self.current.sequence:
            self.current = version  # (not a newer one the listener brought meanwhile: that one is merged next)
        self.index.root = version.root
        self.index.sequence = version.sequence
        for key in version.owners:
            self.nodes.setdefault(short_node_of(key), 0.0)

    async def _publish(self, remote: CollectionVersion | None, plan: Plan) -> CollectionVersion | None:
        """The next version with this node's changes, published; None if another node published first."""
        index = self.index
        entries: dict[str, Entry] = {entry.path: entry for entry in remote.entries} if remote is not None else {}
        for path in index.dirty:
            entry = index.entries.get(path)
            if entry is None:
                continue
            if entry.deleted and path not in entries:
                continue  # a file created and deleted before it was ever published
            entries[path] = entry
        started = trio.current_time()
        now = time.time_ns()
        listed = sorted(expire_tombstones(entries.values(), now), key=lambda e: e.path)
        key = self.peer.config.node_key
        if remote is not None and key.public_key not in remote.owners:
            self._refuse(f"this node (key {key.public_key.hex()}) is not an owner of {self.config.collection!r}")
            return None
        owners = list(remote.owners) if remote is not None else [key.public_key]
        owners += [k for k in self.config.allow if k not in owners]
        sequence, parent = (remote.sequence + 1, remote.root) if remote is not None else (1, ZERO_HASH)
        version = await trio.to_thread.run_sync(lambda: sign_version(key, self.config.collection, sequence, parent, listed, owners))
        await self.local.publish_files([])  # nothing new: files were published as they were scanned
        try:
            await publish_collection(self.peer.tracker, version)
        except CollectionConflict as exc:
            logger.info("%s: version %d was published first; merging again", self.config.collection, exc.current_sequence)
            return None
        except CollectionRefused as exc:
            self._refuse(str(exc))
            return None
        except TrackerError as exc:
            if exc.code != ErrorCode.NOT_AN_OWNER:
                raise
            self._refuse(str(exc))
            return None
        self.refused = ""
        index.dirty.clear()
        logger.info("%s: published version %d (%d entries) in %.2f s", self.config.collection, version.sequence, len(listed), trio.current_time() - started)
        return version

    def _refuse(self, why: str) -> None:
        if not self.refused:
            logger.error(
                "%s: cannot publish this node's changes: %s; they are kept here, and published once an owner "
                "adds this node (chunkswarm collection allow, or sync --owner)",
                self.config.collection,
                why,
            )
        self.refused = why

    # -- the watchers ------------------------------------------------------------
    async def _watcher(self) -> None:
        await watch_folder(self.config.root, self.config.debounce, self.index, self.applier, lambda paths: self.wake(scan=True, paths=paths))

    async def _rescanner(self) -> None:
        while True:
            await trio.sleep(self.config.rescan_interval)
            self.wake(scan=True)

    async def _listener(self) -> None:
        """Long polls on a link of its own (a watch holds back the requests behind it on its link)."""
        peer = self.peer
        # The node's own capabilities (a private swarm's among them) and collections; TLS and the proof in a private swarm.
        hello = Hello(peer.peer_id, listen_port=0, capabilities={**dict(peer.hello.capabilities), COLLECTIONS: 1})
        while True:
            try:
                async with open_query_link(peer.tracker.address, hello, timeout=peer.config.tracker_timeout, key=peer.config.node_key,
                                           private=peer.private) as link:  # fmt: skip
                    if self.current is None:  # what the tracker has now, then changes to it
                        self.current = await fetch_following(link, self.config.collection, self.kept)
                        self.wake()
                    self._listening = True
                    while True:
                        known = self.current.root if self.current is not None else b""
                        version = await watch_collection(link, self.config.collection, known, timeout=_WATCH_TIMEOUT)
                        if version is not None and (self.current is None or version.sequence > self.current.sequence):
                            self.current = version
                            self.applier.fetch_ahead(version)  # its new files on their way while a cycle still runs
                            self.wake()
            except (ChunkswarmError, OSError) as exc:
                logger.debug("watching %s: %s", self.config.collection, exc)
            finally:
                self._listening = False
            await trio.sleep(1.0)

    async def _presence(self) -> None:
        """Presence every ``presence_interval``; the status file meanwhile every half second while files are downloaded."""
        due = 0.0
        while True:
            if trio.current_time() >= due:
                due = trio.current_time() + self.config.presence_interval
                try:
                    await self.check_presence()
                except ChunkswarmError as exc:
                    logger.debug("presence: %s", exc)
                await self._save_status()
            elif self.applier.transfers:
                await self._save_status()
            await trio.sleep(0.5)

    async def check_presence(self) -> None:
        """Which nodes the tracker lists as holders of the collection's files now."""
        online = await holders_now(self.peer.tracker, self.index) | {self.me}
        now = time.time()
        self.online = {node for node in online if node in self.nodes or node == self.me}
        for node in self.online:
            self.nodes[node] = now

    # -- state on disk -------------------------------------------------------------
    async def _save(self) -> None:
        """The index and the version kept, then the status: snapshots taken here, written by a worker thread."""
        encode, kept = self.index.encoder(), self.kept

        def save() -> None:
            self.state.write(INDEX_FILE, encode())
            if kept is not None:
                self.state.write(_VERSION_FILE, encode_version(kept))

        await trio.to_thread.run_sync(save)
        await self._save_status()

    async def _save_status(self) -> None:
        """``.chunkswarm/status.json``, read by ``chunkswarm sync status``."""
        async with self._status_lock:  # (else an older snapshot, written last, could replace a newer one)
            encode = status_encoder(self.config.collection, self.me, self.index, self.refused, self.nodes, self.online,
                                    self.applier.transfers.values())  # fmt: skip
            try:
                await trio.to_thread.run_sync(lambda: self.state.write(STATUS_FILE, encode()))
            except ChunkswarmError as exc:
                logger.warning("%s: cannot write the status file: %s", self.config.root, exc)
