"""Who keeps an upload slot when more downloaders want one than the chunk server serves: pure policy, no I/O.

BitTorrent's choker in spirit (issue 16: at 16 downloaders, half the swarm
served almost nothing while the first peers to get the file served most).
The chunk server (``peer/server.py``) serves up to ``slots`` downloaders at
once. Below that every newcomer is served, so a lone downloader, or the
seeder's only peer, is never refused. When all are taken:

* a newcomer that **uploads to us** (we received chunks from it within
  ``Reciprocity.window``) takes the slot of one that does not, or that uploads
  to us far less;
* a newcomer takes the slot of a connection that has **asked for nothing**
  for ``idle_after`` seconds (it holds a slot and takes no upload);
* a newcomer takes the slot of one that **has had its turn** (been sent
  ``quota`` bytes on its connection) and uploads to us no more than the
  newcomer does: round robin, as libtorrent's seeds choke
  (``seeding_piece_quota``). A seeder is uploaded nothing, so before this its
  slots stayed with the first 8 of 16 downloaders (one more every
  ``optimistic_interval``): the 4-5 others got no chunk from it, held only
  chunks others had, and uploaded 2-4 times less than the mean;
* every ``optimistic_interval`` one newcomer takes a slot whatever it gives
  (the **optimistic** slot, which it keeps for that long): newcomers have
  least, and this is how a peer that has nothing to give yet gets in;
* the slot that goes is the one of lowest standing: idle before asking,
  giving nothing before giving little, then the one we have sent most
  (it **has most**, the newcomer least), then the oldest.

A refused newcomer hears BUSY and tries again later, as from any busy peer.
Peers are known by (IP group, peer id): a peer id alone is only what a HELLO
claims, and one claimed from another address earns nothing.
Costs: one pass over the held slots per contended admission.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import attrs

from common.address import ip_group

__all__ = ["Claim", "Choker", "Reciprocity"]

#: Past this many remembered uploaders, those not heard from within the window are forgotten.
_MAX_REMEMBERED = 4096


@attrs.define(eq=False)
class Reciprocity:
    """The bytes each peer uploaded to us lately: downloads record them, the chunk server's slots read them."""

    #: Received bytes count for this long after the last chunk from that peer (and halve every quarter of it).
    window: float = 20.0
    _received: dict[Hashable, tuple[float, float]] = attrs.field(init=False, factory=dict)

    @staticmethod
    def key(host: str, peer_id: bytes) -> Hashable:
        """How a peer is known: its peer id, and the IP (IPv6 /64) it is at."""
        return ip_group(host), peer_id

    def record(self, peer: Hashable, nbytes: int, now: float) -> None:
        """A chunk of ``nbytes`` from ``peer`` was verified at ``now``."""
        self._received[peer] = (now, self.score(peer, now) + nbytes)
        if len(self._received) > _MAX_REMEMBERED:
            for old in [key for key, (at, _) in self._received.items() if now - at > self.window]:
                del self._received[old]

    def score(self, peer: Hashable, now: float) -> float:
        """Bytes from ``peer`` lately (decayed); 0 if none within :attr:`window`."""
        at, total = self._received.get(peer, (-math.inf, 0.0))
        if now - at > self.window:
            return 0.0
        return total * float(0.5 ** (4 * (now - at) / self.window))


@attrs.define(eq=False)
class Claim:
    """What the choker reads of one served connection."""

    peer: Hashable  # (IP group, peer id)
    since: float
    #: Bytes sent to it on this connection, and when it last asked for a chunk (or has requests queued: ``asking``).
    sent: int = 0
    last_request: float = -math.inf
    asking: bool = False
    #: Until when it holds the optimistic slot (it cannot be made to leave before).
    optimistic_until: float = -math.inf


@attrs.define(eq=False)
class Choker:
    """Decides, when every upload slot is taken, whether a newcomer gets one and whose; see the module docstring."""

    slots: int
    optimistic_interval: float = 2.0
    idle_after: float = 5.0
    #: Bytes sent on a connection after which it gives way to a newcomer that uploads to us as much (its turn is over).
    quota: int = 16 << 20
    reciprocity: Reciprocity = attrs.field(factory=Reciprocity)
    _next_optimistic: float = attrs.field(init=False, default=-math.inf)

    def contended(self, held: int) -> bool:
        """True if a newcomer finds every slot taken (``held`` connections served)."""
        return held >= self.slots

    def victim(self, held: Sequence[Claim], now: float) -> Claim | None:
        """Of ``held``, the claim of lowest standing that may be made to leave (None: all hold the optimistic slot)."""
        movable = [claim for claim in held if claim.optimistic_until <= now]
        return min(movable, key=lambda claim: self._standing(claim, now), default=None)

    def admits(self, newcomer: Claim, victim: Claim, now: float) -> bool:
        """True if ``newcomer`` takes the slot of ``victim`` (every slot being taken): see the module docstring."""
        gives, victim_gives = self.reciprocity.score(newcomer.peer, now), self.reciprocity.score(victim.peer, now)
        if not self._interested(victim, now) or gives > 2 * victim_gives:
            return True
        if victim.sent >= self.quota and gives >= victim_gives:
            return True
        if now >= self._next_optimistic:
            self._next_optimistic = newcomer.optimistic_until = now + self.optimistic_interval
            return True
        return False

    def _interested(self, claim: Claim, now: float) -> bool:
        return claim.asking or now - max(claim.last_request, claim.since) < self.idle_after

    def _standing(self, claim: Claim, now: float) -> tuple[bool, float, int, float]:
        """Lowest goes first: idle, gives least, has been sent most, the oldest."""
        return self._interested(claim, now), self.reciprocity.score(claim.peer, now), -claim.sent, claim.since
