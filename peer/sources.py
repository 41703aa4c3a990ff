"""Which holders a download connects to: pure bookkeeping, no I/O (the :class:`~peer.download.Downloader` asks it).

A tracker lists whatever registered, and anyone can register many ids at
one address or point them at any port of their own IP (issue 12, finding 2:
300 fake holders that say WELCOME and then nothing). So holders are taken
one per address (``host:port``, the chunks of every id listed there pooled),
at most ``max_per_ip`` at once per IP (per /64 for IPv6,
:func:`~common.address.ip_group`), and an address whose source ended
without delivering a chunk, or could not be reached, is tried again only
after a delay that doubles with each such failure, from ``base_delay`` up to
``max_delay``. A source that delivered is retried after ``base_delay``.
Costs: a dict and a counter update per connection and per ended source.

Every downloader must not pick the same holders (issue 16: with a tracker
answering in one fixed order, half a swarm of 16 never uploaded): the new
holders of each answer are offered in random order, and every
``rotate_interval`` the source that delivered fewest chunks makes room for a
waiting holder (:meth:`Sources.rotate`), so a holder serving many delivers
slowly to each and loses downloaders to one that serves few; that holder is
a random one of those waiting, never-connected ones first
(:meth:`Sources.candidates`), not the first listed.
"""

from __future__ import annotations

import collections
import itertools
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

import attrs

from common.address import format_address, ip_group
from common.allow import AllowList
from common.chunkset import ChunkSet
from common.errors import ValidationError
from common.messages import Holder

__all__ = ["Sources", "pool_by_address"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]

#: Past this many remembered failing addresses, those whose retry delay is over are forgotten.
_MAX_REMEMBERED = 1000
#: Holders remembered from earlier answers of the tracker, to be tried (the oldest are forgotten first).
_MAX_CANDIDATES = 1000


def pool_by_address(
    holders: tuple[Holder, ...], count: int, *, skip: bytes, admits: Callable[[Address], bool] = lambda _: True
) -> dict[Address, tuple[bytes, ChunkSet]]:
    """``holders`` by address: the first id listed there and the union of the chunks of every id there.

    ``skip`` (our own id), holders at an address ``admits`` refuses (``--allow``)
    and holders with a malformed bitfield are left out.
    """
    pooled: dict[Address, tuple[bytes, ChunkSet]] = {}
    for holder in holders:
        if holder.peer_id == skip:
            continue
        try:
            chunks = ChunkSet.from_bitfield(count, holder.bitfield)
        except ValidationError:
            continue
        address = (holder.host, holder.port)
        if not admits(address):
            continue
        first = pooled.get(address)
        pooled[address] = (holder.peer_id, chunks) if first is None else (first[0], ChunkSet(count, first[1].mask | chunks.mask))
    return pooled


class Rotating(Protocol):
    """What :meth:`Sources.rotate` reads of a source (a :class:`~peer.session.Session`)."""

    delivered: bool
    retiring: bool
    recent: int  # chunks accepted since the last rotation
    name: str
    address: Address

    def wake(self) -> None: ...


S = TypeVar("S", bound=Rotating)


@attrs.define(eq=False)
class Sources:
    """The addresses connected to, per IP, and when each failing address may be tried again; see the module docstring."""

    max_per_ip: int
    base_delay: float
    max_delay: float
    #: ``--allow``: holders outside these ranges are never connected to (and said once each).
    allow: AllowList = attrs.field(factory=AllowList)
    _outside: set[Address] = attrs.field(init=False, factory=set)
    _connected: set[Address] = attrs.field(init=False, factory=set)
    _per_ip: collections.Counter[str] = attrs.field(init=False, factory=collections.Counter)
    _failures: dict[Address, int] = attrs.field(init=False, factory=dict)
    _retry_at: dict[Address, float] = attrs.field(init=False, factory=dict)
    #: Holders not connected to yet, from this and earlier answers, in the order first listed (the
    #: oldest are forgotten first): a tracker answers with a random few of many holders, and one
    #: seen once keeps its chance (:meth:`candidates` draws at random, not by order).
    _candidates: dict[Address, tuple[bytes, ChunkSet]] = attrs.field(init=False, factory=dict)
    rng: random.Random = attrs.field(factory=random.Random)
    _rotate_at: float = attrs.field(init=False, default=0.0)

    def admits(self, address: Address) -> bool:
        """False for a holder outside :attr:`allow` (logged the first time)."""
        if self.allow.admits(address[0]):
            return True
        if address not in self._outside and len(self._outside) < _MAX_REMEMBERED:
            self._outside.add(address)
            logger.info("not connecting to the holder at %s: outside the allowed address ranges (%s)", format_address(*address), self.allow)
        return False

    def offer(self, address: Address, peer_id: bytes, chunks: ChunkSet) -> None:
        """The tracker lists ``peer_id`` at ``address`` with ``chunks`` (and no source is there)."""
        self._candidates[address] = (peer_id, chunks)
        if len(self._candidates) > _MAX_CANDIDATES:
            del self._candidates[next(iter(self._candidates))]

    def offer_all(self, offers: Iterable[tuple[Address, bytes, ChunkSet]]) -> None:
        """:meth:`offer` each of one answer's new holders, in random order: downloaders given one list do not all try its first holders."""
        shuffled = list(offers)
        self.rng.shuffle(shuffled)
        for address, peer_id, chunks in shuffled:
            self.offer(address, peer_id, chunks)

    def rotate(self, sources: Sequence[S], now: float, *, interval: float, places: int, wanted: int) -> S | None:
        """The source to retire now, if any: at most once per ``interval``.

        When ``places`` sources (not retiring) have delivered and a holder we may
        connect to has chunks in the mask ``wanted``: the one that delivered
        fewest chunks since the last time, marked ``retiring`` and woken. Every
        count starts again from 0.
        """
        if now < self._rotate_at:
            return None
        self._rotate_at = now + interval
        delivering = [source for source in sources if source.delivered and not source.retiring]
        slowest = min(delivering, key=lambda source: source.recent, default=None)
        fewest = slowest.recent if slowest is not None else 0
        for source in delivering:
            source.recent = 0
        if slowest is None or len(delivering) < places:
            return None
        # Its IP's count goes down once it ends: on loopback (every holder at one IP) the per-IP cap is full.
        freed = ip_group(slowest.address[0])
        if not any(
            chunks.mask & wanted and (self.may_connect(address, now) or self._frees_room(address, freed, now))
            for address, (_, chunks) in self._candidates.items()
        ):
            return None
        logger.debug("%s delivered least (%d chunks in %g s): its place goes to another holder", slowest.name, fewest, interval)
        slowest.retiring = True
        slowest.wake()
        return slowest

    def _frees_room(self, address: Address, freed: str, now: float) -> bool:
        """True if ``address`` may be connected to once a source at the IP group ``freed`` ends."""
        group = ip_group(address[0])
        return group == freed and address not in self._connected and self._per_ip[group] <= self.max_per_ip and self._retry_at.get(address, 0.0) <= now

    def candidates(self, rare: int = 0) -> list[tuple[Address, bytes, ChunkSet]]:
        """Holders to try: one address per IP (one IPv6 /64) in turn, IPs with fewer sources first, then those
        holding chunks of ``rare`` (missing, and held by no source), then those never connected to, in random order.

        Ports are cheap and IP addresses are not: a client with many ids on a few
        hosts gets a turn per host, not per id, so an honest holder alone on its
        address is tried within the first rounds however many fakes are listed.
        Not the first listed first (issue 16): a holder that registers a moment
        after a downloader's first answer was behind all of that answer in every
        downloader's list, and at one new source a second it was first asked
        8 s into a 10 s download. As libtorrent ranks its connect candidates
        (never connected, then connected longest ago; a per-pair random rank),
        every waiting holder gets an even chance at each free place. A holder with
        chunks no source has comes first: the seeder, which refuses all but its
        slots, is asked again (every ``base_delay``) and its slots go round
        (``peer/slots.py``), instead of staying with the first 8 asked.
        """
        by_group: dict[str, list[tuple[Address, bytes, ChunkSet]]] = {}
        for address, (peer_id, chunks) in self._candidates.items():
            by_group.setdefault(ip_group(address[0]), []).append((address, peer_id, chunks))
        tried, rank = self._retry_at, self.rng.random
        for members in by_group.values():
            members.sort(key=lambda member: (not member[2].mask & rare, member[0] in tried, rank()))
        shuffled = list(by_group.items())
        self.rng.shuffle(shuffled)
        groups = sorted(shuffled, key=lambda item: (self._per_ip[item[0]], not item[1][0][2].mask & rare, item[1][0][0] in tried))
        rounds = itertools.zip_longest(*(members for _, members in groups))
        return [candidate for turn in rounds for candidate in turn if candidate is not None]

    def may_connect(self, address: Address, now: float) -> bool:
        """True if a new source at ``address`` may start now."""
        return (
            address not in self._connected
            and self._per_ip[ip_group(address[0])] < self.max_per_ip
            and self._retry_at.get(address, 0.0) <= now
        )

    def retrying(self, address: Address) -> bool:
        """True if ``address`` failed before (a reconnection to it does not hold off the stall timer)."""
        return address in self._retry_at

    def connect(self, address: Address) -> None:
        self._candidates.pop(address, None)
        self._connected.add(address)
        self._per_ip[ip_group(address[0])] += 1

    def ended(self, address: Address, now: float, *, delivered: bool) -> float:
        """The source at ``address`` ended; returns the delay before it may be tried again."""
        if address in self._connected:
            self._connected.discard(address)
            group = ip_group(address[0])
            self._per_ip[group] -= 1
            if self._per_ip[group] <= 0:
                del self._per_ip[group]
        failures = 0 if delivered else self._failures.get(address, 0) + 1
        delay = min(self.max_delay, self.base_delay * float(2 ** max(failures - 1, 0)))
        if len(self._retry_at) > _MAX_REMEMBERED:  # a tracker can list endless new addresses
            for old in [a for a, due in self._retry_at.items() if due <= now]:
                del self._retry_at[old]
                self._failures.pop(old, None)
        if failures:
            self._failures[address] = failures
        else:
            self._failures.pop(address, None)
        self._retry_at[address] = now + delay
        return delay
