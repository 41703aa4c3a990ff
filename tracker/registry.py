"""The tracker's state, pure and synchronous: peers, files, replicas, expiry, holder selection.

No sockets, no trio, no SQLite: the server feeds it requests that are already
decoded and the peer's *observed* host, and turns its answers (or its
:class:`~common.errors.TrackerError`, whose ``code`` is an
:class:`~common.framing.ErrorCode`) into replies. Time comes from an injected
clock, so expiry is tested with a fake one.

Costs are kept per request rather than per swarm, because a tracker with 1000
peers x 100 files answers tens of thousands of requests a second:

* peers live in an ordered dict in order of last activity, so touching a peer
  is O(1) and an expiry sweep only looks at the peers that actually expired;
* each file keeps its replicas in a list in random order (a newcomer takes a
  random slot, removal swaps in the last), so N random holders are a window
  of N consecutive slots from a random start (all of them, rotated from a
  random start, when there are no more than N), and counts its complete copies
  incrementally; a replica joins and leaves in O(1), so dropping a peer costs
  O(its replicas) and a withdrawal what an announcement does (a mask over the
  file's chunks), plus O(1) to remove the replica when nothing is left;
* a peer bound to its connection (capability ``withdraw``) keeps that connection's
  token, so releasing it when the connection closes is one look-up;
* no object per replica (issue 16): a file keeps its holders and their chunks (in wire
  form, complete ones sharing one object) in two lists, slot for slot, and each peer
  the slot of each file it holds in two arrays, keys sorted (``tracker/slotmap.py``, 8 bytes an
  entry where a dict took 46): ~33 bytes a replica, plus its bitfield when partial.
  A WHO_HAS joins a slice of the file's heads and bits, interleaved, encoding nothing;
* a look-up is O(log files + matches) (``tracker/index.py``); peers are counted per
  network and address in O(1) (``tracker/limits.py``).
"""

from __future__ import annotations

import itertools
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from common.chunkset import Ranges
from common.errors import TrackerError
from common.framing import ErrorCode
from common.manifest import Manifest
from tracker.holders import holder_window
from tracker.index import CatalogueIndex
from tracker.limits import AddressBook, distinct_window
from tracker.records import FileRecord, FileSummary, Peer, Replica, bits_mask, check_manifest, chunk_mask, conflict_message

__all__ = ["Registry", "check_manifest"]


@attrs.define(eq=False)
class Registry:
    """Peers, files and replicas of one swarm.

    Peers are keyed by peer id, bound to the host they registered from while
    they are live: the same id from the same host may re-register (a
    reconnect, possibly on a new port) and keeps its replicas; from another
    host it is refused until the first registration expires. A registration
    may also be bound to its connection (``connection``, any token the
    caller chooses): :meth:`release` drops the peer when that connection
    closes, unless a later registration has bound it elsewhere or to none.
    At most ``max_peers_per_ip`` peer ids are live per network (an IPv4
    address, an IPv6 /64); 0: no cap.
    """

    peer_timeout: float
    clock: Callable[[], float]
    rng: random.Random = attrs.field(factory=random.Random)
    max_peers_per_ip: int = 0
    index: CatalogueIndex = attrs.field(init=False, factory=CatalogueIndex)
    addresses: AddressBook = attrs.field(init=False, factory=AddressBook)
    _seq: int = attrs.field(init=False, default=0)
    _peers: OrderedDict[bytes, Peer] = attrs.field(init=False, factory=OrderedDict)  # least recently seen first
    _files: dict[bytes, FileRecord] = attrs.field(init=False, factory=dict)  # publish order
    #: The same records by ``seq``, the key of a peer's ``slots``.
    _by_seq: dict[int, FileRecord] = attrs.field(init=False, factory=dict, repr=False)
    replica_count: int = attrs.field(init=False, default=0)
    chunk_replica_count: int = attrs.field(init=False, default=0)

    # -- peers -----------------------------------------------------------------
    def register(
        self, peer_id: bytes, host: str, port: int, connection: object | None = None, node: bytes | None = None, http_port: int | None = None
    ) -> tuple[Peer, bool]:
        """Make ``peer_id`` live at ``(host, port)``; returns the peer and whether it is new.

        ``connection``: the token of the connection this registration is bound
        to (see :meth:`release`), or None for one that only expires. ``node``:
        the node id the connection proved (PROTOCOL.md §8.6), which the peer is
        then bound to: only that node may register it again, from any address;
        a proven node takes over a record of its peer id made without one.
        ``http_port``: its HTTP gateway's port (PROTOCOL.md §8.10), as of this registration."""
        now = self.clock()
        peer = self._live(peer_id, now)
        if peer is not None and node is not None and peer.node is None:
            self._remove_peer(peer)  # its peer id is the key's: whoever registered it unproven was not its owner
            peer = None
        if peer is not None:
            if peer.node != node or (node is None and peer.host != host):
                raise TrackerError(conflict_message(peer), code=ErrorCode.IDENTITY_CONFLICT)
            if (peer.host, peer.port) != (host, port):
                if peer.host != host:  # an identified node moved: it counts against its new network
                    self.addresses.check_room(host, self.max_peers_per_ip)
                self.addresses.leave(peer.host, peer.port)
                self.addresses.join(host, port)
                peer.move(host, port)
                for seq, slot in peer.slots.items():
                    self._by_seq[seq].parts[2 * slot] = peer.head
            peer.connection = connection  # the latest registration decides
            peer.http_port = http_port
            self._touch(peer, now)
            return peer, False
        self.addresses.check_room(host, self.max_peers_per_ip)
        peer = Peer(peer_id, host, port, now, connection, node, http_port=http_port)
        self._peers[peer_id] = peer
        self.addresses.join(host, port)
        return peer, True

    def peer(self, peer_id: bytes, host: str, port: int | None = None, node: bytes | None = None) -> Peer:
        """The live peer registered as ``peer_id``, marked as seen now, if the asker may act as it.

        That is: a connection proving the peer's ``node`` (from any host), or,
        for a peer registered without identity, one from its ``host`` and
        ``port`` (None: any port). An identified peer asked for without its
        node is ``IDENTITY_CONFLICT``, any other mismatch ``NOT_REGISTERED``.
        Any request that needs registration goes through here, so each one
        counts as a sign of life, not only HEARTBEAT.
        """
        now = self.clock()
        peer = self._live(peer_id, now)
        if peer is not None and peer.node is not None and peer.node != node:
            raise TrackerError(conflict_message(peer), code=ErrorCode.IDENTITY_CONFLICT)
        if peer is None or (node is None and (peer.host != host or port not in (None, peer.port))) or (node is not None and peer.node is None):
            raise TrackerError("not registered: send REGISTER first", code=ErrorCode.NOT_REGISTERED)
        self._touch(peer, now)
        return peer

    def deregister(self, peer_id: bytes, host: str, port: int | None = None, node: bytes | None = None) -> Peer | None:
        """Forget the peer and its replicas, if the asker may act as it (as :meth:`peer` says); None if it was not registered."""
        peer = self._live(peer_id, self.clock())
        if peer is None:
            return None
        mine = peer.node == node and (node is not None or (peer.host == host and port in (None, peer.port)))
        if not mine and (node is None or peer.node is not None):  # (a proven key owns its peer id's unproven record)
            raise TrackerError(conflict_message(peer), code=ErrorCode.IDENTITY_CONFLICT)
        self._remove_peer(peer)
        return peer

    def release(self, peer_id: bytes, connection: object) -> Peer | None:
        """The connection whose token was given to :meth:`register` has closed: drop the peer if still bound to it.

        Returns the peer dropped, or None when ``peer_id`` is gone or has
        registered again since, on another connection or on none.
        """
        peer = self._peers.get(peer_id)
        if peer is None or peer.connection is not connection:
            return None
        self._remove_peer(peer)
        return peer

    def expire(self) -> list[Peer]:
        """Drop every peer silent for longer than ``peer_timeout``; returns them."""
        deadline = self.clock() - self.peer_timeout
        expired = []
        for peer in self._peers.values():  # least recently seen first
            if peer.last_seen >= deadline:
                break
            expired.append(peer)
        for peer in expired:
            self._remove_peer(peer)
        return expired

    def peers(self) -> list[Peer]:
        """The registered peers, least recently seen first (expired ones until the next sweep). O(peers)."""
        return list(self._peers.values())

    def get_peer(self, peer_id: bytes) -> Peer | None:
        """The registered peer, or None (no liveness check, no touch): for logs and tests."""
        return self._peers.get(peer_id)

    def _live(self, peer_id: bytes, now: float) -> Peer | None:
        peer = self._peers.get(peer_id)
        if peer is not None and now - peer.last_seen > self.peer_timeout:
            # Expired but not swept yet: gone all the same.
            self._remove_peer(peer)
            return None
        return peer

    def _touch(self, peer: Peer, now: float) -> None:
        peer.last_seen = now
        self._peers.move_to_end(peer.peer_id)

    def _remove_peer(self, peer: Peer) -> None:
        del self._peers[peer.peer_id]
        self.addresses.leave(peer.host, peer.port)
        for seq, slot in peer.slots.items():
            self._unlink(self._by_seq[seq], slot)
        peer.slots.clear()

    # -- files -----------------------------------------------------------------
    def publish(self, manifest: Manifest, *, checked: bool = False) -> bool:
        """List ``manifest``; True if it is new, False if that file id was already listed.

        Idempotent by file id: the first manifest of an id stays. ``checked``
        skips :func:`check_manifest` when the caller has just run it (off the
        event loop) or loads the catalogue it wrote itself.
        """
        if manifest.file_id in self._files:
            return False
        if not checked:
            check_manifest(manifest)
        self._seq += 1
        self._files[manifest.file_id] = self._by_seq[self._seq] = record = FileRecord(manifest, manifest.name.casefold(), self._seq)
        self.index.add(record)
        return True

    def has_file(self, file_id: bytes) -> bool:
        return file_id in self._files

    def held_files(self) -> list[bytes]:
        """The files some live peer holds chunks of. O(files)."""
        return [file_id for file_id, record in self._files.items() if record.holders]

    def drop_unheld(self, file_ids: Iterable[bytes]) -> list[Manifest]:
        """Unlist those of ``file_ids`` no peer holds (retention: ``tracker/retention.py``); their manifests."""
        dropped = []
        for file_id in file_ids:
            record = self._files.get(file_id)
            if record is not None and not record.holders:
                del self._files[file_id], self._by_seq[record.seq]
                self.index.remove(record)
                dropped.append(record.manifest)
        return dropped

    def unlist(self, file_id: bytes) -> Manifest | None:
        """Take ``file_id`` out of the catalogue with all its replicas (unpublished); its manifest, or None if not listed."""
        record = self._files.pop(file_id, None)
        if record is None:
            return None
        del self._by_seq[record.seq]
        self.index.remove(record)
        for slot in reversed(range(len(record.holders))):  # from the last: nothing moves
            del record.holders[slot].slots[record.seq]
            self._unlink(record, slot)
        return record.manifest

    def record(self, file_id: bytes) -> FileRecord:
        """The record of ``file_id``; ``TrackerError(UNKNOWN_FILE)`` if it is not published."""
        if (record := self._files.get(file_id)) is None:
            raise TrackerError(f"no file with id {file_id.hex()[:16]}", code=ErrorCode.UNKNOWN_FILE)
        return record

    def list_files(self, pattern: str = "", limit: int | None = None) -> list[FileSummary]:
        """Files whose name contains ``pattern`` (case-insensitive; empty: all), newest first."""
        return [FileSummary.of(record) for record in itertools.islice(filter(None, self.scan(pattern)), limit)]

    def scan(self, pattern: str = "", every: int = 1000) -> Iterator[FileRecord | None]:
        """The records whose name contains ``pattern`` (case-insensitive), newest first, and None after every ``every`` scanned.

        A listing costs O(files) whatever it matches: a caller on the event loop
        yields at the Nones. Over the catalogue as it was at the first ``next()``.
        """
        folded = pattern.casefold()
        records = list(reversed(self._files.values()))
        for start in range(0, len(records), every):
            for record in records[start : start + every]:
                if folded in record.folded_name:
                    yield record
            yield None

    def lookup(self, query: str, limit: int) -> tuple[list[FileSummary], int]:
        """The newest ``limit`` files named ``query`` or whose id starts with ``query`` (hex), and how many more match."""
        records, more = self.index.find(query, limit)
        return [FileSummary.of(record) for record in records], more

    # -- replicas --------------------------------------------------------------
    def announce(self, peer: Peer, file_id: bytes, ranges: Ranges) -> Replica | None:
        """Record that ``peer`` holds the chunks in ``ranges`` of ``file_id`` (added to what it held).

        Returns the replica, or None when nothing is held yet (an empty
        announcement of a file with chunks).
        """
        record = self.record(file_id)
        mask = chunk_mask(record, ranges, "announcement")
        slot = peer.slots.get(record.seq)
        if slot is None:
            if not mask and record.manifest.chunk_count:
                return None
            return Replica(peer, record, self._link(peer, record, mask))
        bits = record.parts[2 * slot + 1]
        if bits is not record.full_bits:  # a complete one has nothing to add
            held = bits_mask(bits)
            merged = held | mask
            if merged != held:
                self.chunk_replica_count += merged.bit_count() - held.bit_count()
                record.parts[2 * slot + 1] = merged_bits = record.wire(merged)
                if merged_bits is record.full_bits:
                    record.complete_copies += 1
        return Replica(peer, record, slot)

    def withdraw(self, peer: Peer, file_id: bytes, ranges: Ranges) -> Replica | None:
        """Forget that ``peer`` holds the chunks in ``ranges`` of ``file_id``; its replica goes once none is left.

        Returns the replica, or None when the peer holds nothing of the file
        any more (a file without chunks is withdrawn whole, whatever the
        ranges). Chunks it never announced are not an error. (PROTOCOL.md §8.5)
        """
        record = self.record(file_id)
        mask = chunk_mask(record, ranges, "withdrawal")
        slot = peer.slots.get(record.seq)
        if slot is None:
            return None
        bits = record.parts[2 * slot + 1]
        held = bits_mask(bits)
        left = held & ~mask
        if not left:
            del peer.slots[record.seq]
            self._unlink(record, slot)
            return None
        if left != held:
            if bits is record.full_bits:
                record.complete_copies -= 1
            self.chunk_replica_count -= held.bit_count() - left.bit_count()
            record.parts[2 * slot + 1] = record.wire(left)
        return Replica(peer, record, slot)

    def holders(self, file_id: bytes, *, limit: int, exclude: bytes | None = None) -> tuple[Manifest, list[Replica]]:
        """The manifest and up to ``limit`` replicas of ``file_id`` (at random when more), never ``exclude``'s (the asker's)."""
        record, slots = self.holder_slots(file_id, limit=limit, exclude=exclude)
        return record.manifest, [Replica(record.holders[i], record, i) for i in slots]

    def holder_slots(self, file_id: bytes, *, limit: int, exclude: bytes | None = None) -> tuple[FileRecord, Sequence[int]]:
        """As :meth:`holders`, as the file's record and the chosen slots in its ``holders``/``parts``."""
        record = self.record(file_id)
        count = len(record.holders)
        asker = self._peers.get(exclude) if exclude is not None else None
        mine = -1 if asker is None else asker.slots.get(record.seq, -1)
        others = count - (mine >= 0)
        if self.addresses.crowded and others:
            # Some address is claimed by several peer ids: hand each address out once.
            return record, distinct_window(record.holders, self.rng.randrange(count), limit, mine, self.addresses.ids_at, self.rng)
        return record, holder_window(count, limit, mine, self.rng)

    def _link(self, peer: Peer, record: FileRecord, mask: int) -> int:
        # Returns its slot, a random one (its occupant moves to the end): the holder list
        # stays a random permutation, which the windows of holder_slots rely on.
        holders, parts = record.holders, record.parts
        count = len(holders)
        slot = self.rng.randrange(count + 1)
        wire = record.wire(mask)
        if slot < count:
            moved = holders[slot]
            moved.slots[record.seq] = count
            holders.append(moved)
            parts += parts[2 * slot : 2 * slot + 2]
            holders[slot] = peer
            parts[2 * slot : 2 * slot + 2] = peer.head, wire
        else:
            holders.append(peer)
            parts += (peer.head, wire)
        peer.slots[record.seq] = slot
        if wire is record.full_bits:
            record.complete_copies += 1
        self.replica_count += 1
        self.chunk_replica_count += mask.bit_count()
        return slot

    def _unlink(self, record: FileRecord, slot: int) -> None:
        # Swap-remove from the file's lists; the peer's ``slots`` is the caller's to update.
        holders, parts = record.holders, record.parts
        gone = parts[2 * slot + 1]
        last, last_parts = holders.pop(), parts[-2:]
        del parts[-2:]
        if slot < len(holders):
            holders[slot] = last
            parts[2 * slot : 2 * slot + 2] = last_parts
            last.slots[record.seq] = slot
        if gone is record.full_bits:
            record.complete_copies -= 1
            self.chunk_replica_count -= record.manifest.chunk_count
        else:
            self.chunk_replica_count -= bits_mask(gone).bit_count()
        self.replica_count -= 1

    # -- counters --------------------------------------------------------------
    @property
    def peer_count(self) -> int:
        return len(self._peers)

    @property
    def file_count(self) -> int:
        return len(self._files)

    def counts(self) -> dict[str, int]:
        counted = (len(self._peers), len(self._files), self.replica_count, self.chunk_replica_count)
        return dict(zip(("peers", "files", "replicas", "chunk_replicas"), counted, strict=True))
