"""BitTorrent swarms, pure and synchronous: peers per info-hash, announce, scrape, expiry.

No sockets, no trio: the HTTP and UDP shells (``tracker.bittorrent.http``,
``tracker.bittorrent.udp``) decode a request, pass the *observed* host (or a
claimed one, where the settings allow it), and encode what comes back. Time
comes from an injected clock and randomness from an injected generator, so
expiry and sampling are tested without waiting.

Costs, per request rather than per swarm (a tracker answers tens of
thousands of announces a second):

* every peer is in one ordered dict in order of last announce, so touching it
  is O(1) and an expiry sweep looks only at the peers that actually expired;
* each swarm keeps its IPv4 and its IPv6 peers in a list in random order (a
  newcomer takes a random slot, removal swaps in the last) beside a list of
  their compact entries (BEP 23: 6 bytes; BEP 7: 18), so ``numwant`` random
  peers are one or two slices of consecutive entries from a random start,
  joined in C: an announce costs O(numwant) bytes and O(1) Python steps;
* seeders, leechers and completed downloads are counted as peers come, go and
  finish, so a scrape is O(1) per info-hash;
* peers are counted per network (``common.address.ip_group``: an IPv4
  address, an IPv6 /64) overall and per swarm, so a cap costs O(1).
"""

from __future__ import annotations

import heapq
import random
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator

import attrs

from common.address import ip_group
from tracker.bittorrent.errors import BtFailure
from tracker.limits import Tally

__all__ = ["BtPeer", "Swarm", "Swarms", "Peers", "SwarmSummary", "compact_entry", "EVENT_NONE", "EVENT_COMPLETED", "EVENT_STARTED", "EVENT_STOPPED"]

#: Announce events, numbered as in BEP 15 (the HTTP shell maps ``event=`` onto them).
EVENT_NONE, EVENT_COMPLETED, EVENT_STARTED, EVENT_STOPPED = 0, 1, 2, 3


def compact_entry(host: str, port: int) -> bytes:
    """A peer's compact entry: its packed address and big-endian port (BEP 23 for IPv4, BEP 7 for IPv6).

    ``host`` is an address as a socket reports it (or a claimed one already checked).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.inet_pton(family, host.split("%", 1)[0]) + port.to_bytes(2, "big")


class BtPeer:
    """One peer in one swarm: where it is, whether it seeds, when it was last heard from."""

    __slots__ = ("peer_id", "host", "port", "entry", "network", "seeder", "completed", "last_seen", "swarm", "slot")

    def __init__(self, peer_id: bytes, host: str, port: int, swarm: Swarm) -> None:
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.entry = compact_entry(host, port)
        self.network = ip_group(host)
        self.seeder = False
        #: Whether its completion was counted (BEP 48 ``downloaded``), so a repeated ``completed`` counts once.
        self.completed = False
        self.last_seen = 0.0
        self.swarm = swarm
        self.slot = -1  # index in its swarm's list of its address family


class Swarm:
    """The peers of one info-hash, by peer id and in two random-order lists (IPv4, IPv6) with their compact entries."""

    __slots__ = ("info_hash", "peers", "v4", "v6", "entries4", "entries6", "seeders", "downloaded", "networks")

    def __init__(self, info_hash: bytes) -> None:
        self.info_hash = info_hash
        self.peers: dict[bytes, BtPeer] = {}
        self.v4: list[BtPeer] = []
        self.v6: list[BtPeer] = []
        self.entries4: list[bytes] = []
        self.entries6: list[bytes] = []
        self.seeders = 0
        self.downloaded = 0
        self.networks = Tally()

    @property
    def leechers(self) -> int:
        return len(self.peers) - self.seeders


@attrs.frozen
class Peers:
    """What an announce hands back: the swarm's counts and up to ``numwant`` other peers, compact per address family."""

    seeders: int
    leechers: int
    downloaded: int
    peers4: bytes
    peers6: bytes
    #: The same peers with their ids, for a client that asked for ``compact=0`` (BEP 3's list of dicts); empty otherwise.
    listed: tuple[tuple[bytes, str, int], ...] = ()


@attrs.frozen
class SwarmSummary:
    """One swarm as listed by ``chunkswarm ls`` and the stats."""

    info_hash: bytes
    seeders: int
    leechers: int
    downloaded: int


@attrs.define(eq=False)
class Swarms:
    """Every BitTorrent swarm of one tracker.

    A peer is keyed by (info-hash, peer id) and bound to the host it
    announced from while it is live: the same id from another host is refused
    (so nobody stops or moves another's peer by replaying its id) until it
    expires. ``peer_timeout`` seconds without an announce and it is dropped
    (:meth:`expire`). ``max_peers_per_ip`` caps the peers of one network
    across all swarms, ``max_peers_per_ip_per_swarm`` within one swarm, and
    ``max_peers`` all of them together (0: no cap).
    """

    peer_timeout: float
    clock: Callable[[], float]
    rng: random.Random = attrs.field(factory=random.Random)
    max_peers: int = 0
    max_peers_per_ip: int = 0
    max_peers_per_ip_per_swarm: int = 0
    _swarms: dict[bytes, Swarm] = attrs.field(init=False, factory=dict)
    #: Every peer, least recently announced first, keyed by info-hash + peer id.
    _peers: OrderedDict[bytes, BtPeer] = attrs.field(init=False, factory=OrderedDict)
    networks: Tally = attrs.field(init=False, factory=Tally)
    #: Seeders in all swarms, kept as they change.
    seeders: int = attrs.field(init=False, default=0)
    announces: int = attrs.field(init=False, default=0)
    scrapes: int = attrs.field(init=False, default=0)

    def announce(
        self, info_hash: bytes, peer_id: bytes, host: str, port: int, left: int, event: int = EVENT_NONE, numwant: int = 50, listed: bool = False
    ) -> Peers:
        """Record an announce from ``host`` and answer it with up to ``numwant`` other peers of the swarm.

        ``event`` is one of the ``EVENT_*`` values: ``EVENT_STOPPED`` removes
        the peer (and answers no peers). A completed download is counted once
        per peer: when it says ``EVENT_COMPLETED``, or when a peer known as a
        leecher has nothing ``left``. A peer with nothing ``left`` is a seeder. ``listed``: also give the
        peers with their ids (``compact=0``). Raises :class:`BtFailure`.
        """
        if port == 0:
            raise BtFailure("port 0 is not a port a peer can be reached at")
        self.announces += 1
        now = self.clock()
        key = info_hash + peer_id
        peer = self._peers.get(key)
        if peer is not None and now - peer.last_seen > self.peer_timeout:
            self._remove(key, peer)  # expired but not swept yet: its host binding is void
            peer = None
        if peer is not None and peer.host != host:
            raise BtFailure("this peer id is announced from another address")
        if event == EVENT_STOPPED:
            swarm = self._swarms.get(info_hash)
            if peer is not None:
                self._finish(peer, left, event)
                self._remove(key, peer)
            if swarm is None:
                return Peers(0, 0, 0, b"", b"")
            return Peers(swarm.seeders, swarm.leechers, swarm.downloaded, b"", b"")
        swarm = self._swarms.get(info_hash)
        if peer is None:
            if swarm is None:
                swarm = Swarm(info_hash)
            peer = self._add(key, peer_id, host, port, swarm)
            peer.seeder = left == 0
            peer.completed = peer.seeder and event != EVENT_COMPLETED  # a newcomer that seeds did not download here
            swarm.seeders += peer.seeder
            self.seeders += peer.seeder
        else:
            assert swarm is not None
            if peer.port != port:
                self._move(peer, port)
            self._peers.move_to_end(key)
        peer.last_seen = now
        self._finish(peer, left, event)
        # A seeder has no use for other seeders, but the window is random and cheap; clients skip seeders themselves.
        return Peers(
            swarm.seeders, swarm.leechers, swarm.downloaded,
            self._window(swarm.entries4, peer, numwant, 4), self._window(swarm.entries6, peer, numwant, 6),
            self._listed(swarm, peer, numwant) if listed else (),
        )  # fmt: skip

    def scrape(self, info_hash: bytes) -> tuple[int, int, int]:
        """``(complete, downloaded, incomplete)`` of one info-hash (all 0 for one no peer announced)."""
        self.scrapes += 1
        swarm = self._swarms.get(info_hash)
        if swarm is None:
            return 0, 0, 0
        return swarm.seeders, swarm.downloaded, swarm.leechers

    def expire(self) -> int:
        """Drop every peer silent for more than ``peer_timeout``; how many. O(expired peers)."""
        horizon = self.clock() - self.peer_timeout
        dropped = 0
        peers = self._peers
        while peers:
            key, peer = next(iter(peers.items()))
            if peer.last_seen >= horizon:
                break
            self._remove(key, peer)
            dropped += 1
        return dropped

    def _finish(self, peer: BtPeer, left: int, event: int) -> None:
        """Count a completed download once per peer: it says ``completed``, or a leecher now has nothing left.

        (aria2c with ``--seed-time=0`` never says ``completed``: it stops with nothing left.)
        """
        if left == 0 and not peer.seeder:
            peer.seeder = True
            peer.swarm.seeders += 1
            self.seeders += 1
        elif left and peer.seeder:  # a seeder that lost data, or a client restarted on a partial copy
            peer.seeder = False
            peer.swarm.seeders -= 1
            self.seeders -= 1
        if (event == EVENT_COMPLETED or peer.seeder) and not peer.completed:
            peer.completed = True
            peer.swarm.downloaded += 1

    def summaries(self, limit: int) -> Iterator[SwarmSummary]:
        """The ``limit`` swarms with the most peers, most first: O(swarms x log limit)."""
        ranked = heapq.nsmallest(limit, self._swarms.values(), key=lambda swarm: (-len(swarm.peers), swarm.info_hash))
        for swarm in ranked:
            yield SwarmSummary(swarm.info_hash, swarm.seeders, swarm.leechers, swarm.downloaded)

    def counts(self) -> dict[str, int]:
        """The stats' counters, named for BitTorrent: O(1), as STATS is answered on the fast path."""
        return {
            "bittorrent_torrents": len(self._swarms), "bittorrent_peers": len(self._peers),
            "bittorrent_seeders": self.seeders,
            "bittorrent_announces": self.announces, "bittorrent_scrapes": self.scrapes,
        }  # fmt: skip

    @property
    def torrent_count(self) -> int:
        return len(self._swarms)

    # -- internals ----------------------------------------------------------------
    def _add(self, key: bytes, peer_id: bytes, host: str, port: int, swarm: Swarm) -> BtPeer:
        if self.max_peers and len(self._peers) >= self.max_peers:
            raise BtFailure("the tracker is full: try again later")
        network = ip_group(host)
        if self.max_peers_per_ip and self.networks.get(network) >= self.max_peers_per_ip:
            raise BtFailure(f"{network} has {self.max_peers_per_ip} peers announced already, the most one address may have")
        if self.max_peers_per_ip_per_swarm and swarm.networks.get(network) >= self.max_peers_per_ip_per_swarm:
            raise BtFailure(f"{network} has {self.max_peers_per_ip_per_swarm} peers in this torrent already, the most one address may have")
        peer = BtPeer(peer_id, host, port, swarm)
        if not swarm.peers:
            self._swarms[swarm.info_hash] = swarm
        swarm.peers[peer_id] = peer
        self._peers[key] = peer
        self.networks.add(network)
        swarm.networks.add(network)
        self._insert(peer)
        return peer

    def _remove(self, key: bytes, peer: BtPeer) -> None:
        swarm = peer.swarm
        del self._peers[key]
        del swarm.peers[peer.peer_id]
        self.networks.remove(peer.network)
        swarm.networks.remove(peer.network)
        if peer.seeder:
            swarm.seeders -= 1
            self.seeders -= 1
        self._take_out(peer)
        if not swarm.peers:
            # A swarm with no peers is forgotten, its completed count with it (as opentracker does).
            del self._swarms[swarm.info_hash]

    def _move(self, peer: BtPeer, port: int) -> None:
        """A peer announces a new port (a restart): same host, so same family and network."""
        peer.port = port
        peer.entry = compact_entry(peer.host, port)
        (peer.swarm.entries4 if len(peer.entry) == 6 else peer.swarm.entries6)[peer.slot] = peer.entry

    def _insert(self, peer: BtPeer) -> None:
        swarm = peer.swarm
        peers, entries = (swarm.v4, swarm.entries4) if len(peer.entry) == 6 else (swarm.v6, swarm.entries6)
        slot = self.rng.randrange(len(peers) + 1)
        if slot == len(peers):
            peers.append(peer)
            entries.append(peer.entry)
        else:  # the one there moves to the end: the order stays uniformly random
            other = peers[slot]
            other.slot = len(peers)
            peers.append(other)
            entries.append(other.entry)
            peers[slot] = peer
            entries[slot] = peer.entry
        peer.slot = slot

    def _take_out(self, peer: BtPeer) -> None:
        swarm = peer.swarm
        peers, entries = (swarm.v4, swarm.entries4) if len(peer.entry) == 6 else (swarm.v6, swarm.entries6)
        last = peers.pop()
        last_entry = entries.pop()
        if last is not peer:
            peers[peer.slot] = last
            entries[peer.slot] = last_entry
            last.slot = peer.slot

    def _window(self, entries: list[bytes], asker: BtPeer, numwant: int, family: int) -> bytes:
        """Up to ``numwant`` consecutive entries from a random start (wrapping), never the asker's own."""
        count = len(entries)
        mine = asker.slot if (len(asker.entry) == 6) == (family == 4) else -1
        if mine >= 0:
            count -= 1  # the asker is among them
        if count <= 0 or numwant <= 0:
            return b""
        if numwant >= count:
            if mine < 0:
                return b"".join(entries)
            return b"".join(entries[:mine]) + b"".join(entries[mine + 1 :])
        total = len(entries)
        start = self.rng.randrange(total)
        end = start + numwant
        if start <= mine < end or (end > total and mine < end - total):
            end += 1  # the asker's slot is in the window: one more, and leave it out below
        window = entries[start:end] if end <= total else entries[start:] + entries[: end - total]
        if len(window) > numwant:
            window.remove(asker.entry)
        return b"".join(window)

    def _listed(self, swarm: Swarm, asker: BtPeer, numwant: int) -> tuple[tuple[bytes, str, int], ...]:
        others = [peer for peer in swarm.peers.values() if peer is not asker]
        if len(others) > numwant:
            others = self.rng.sample(others, numwant)
        return tuple((peer.peer_id, peer.host, peer.port) for peer in others)
