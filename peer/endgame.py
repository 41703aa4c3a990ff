"""Endgame duplicates: a second peer for a request only when the first is late (libtorrent's rule).

Pure helpers of :class:`~peer.picker.Picker`. Once every missing chunk some
peer holds is requested, a peer with room in its pipeline may ask for a chunk
already requested from another peer. Each copy that arrives second is a chunk
sent for nothing: its cancel comes too late once a server has put the chunk in
its socket buffers (on loopback, a whole pipeline of 1 MiB chunks).
Duplicating every outstanding request at once sent 18-24% more bytes than
needed at 16 downloaders, and duplicating whatever a peer would bring a little
sooner still 8%, so a duplicate is asked for only when it is worth it:

* each peer's **time per chunk** is measured as its answers arrive (a moving
  average of the time since the later of its previous answer and the request,
  :class:`Pace`), and so is the **swarm's**: the same average over every
  peer's answers, how fast the other peers deliver;
* peers answer in request order, so the ``k``-th request in a peer's queue is
  **due** ``k + 1`` of its chunk times after its last progress (its last
  answer, or its oldest request if later);
* a peer may duplicate a request only if it would deliver it, behind its own
  pipeline, ``MARGIN`` of the swarm's chunk times before it is due: the
  fewest copies first, then the request due **last** (the furthest back in its
  queue, so the cancel may reach the first peer before it sends it), then the
  rarest. The margin is the swarm's, not the asking peer's: answers come in
  bursts (chunks wait in socket buffers while a busy downloader reads others),
  and a burst made a peer's own chunk time, and so its margin, tiny;
* a peer with nothing from it for ``STALL_FACTOR`` chunk times, its own or the
  swarm's if longer, is **stalled**: it is taken to stay silent as long again
  as it has been, so its requests become worth a copy as its silence grows,
  even before the endgame (only a peer with room soon takes them: one with a
  full pipeline would bring them no sooner). One that has answered nothing is
  judged by the swarm's chunk time (by the asking peer's while the swarm has
  none): a fast burst of its own, or of the asking peer's, is no reason to
  think it stalled after a few milliseconds;
* a peer that passed over requests that may turn late looks again after
  about one of its own chunk times (:func:`recheck_after`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sized
from typing import Protocol

import attrs

__all__ = ["MARGIN", "STALL_FACTOR", "Pace", "Paced", "duplicate_for", "record_answer", "recheck_after"]

#: A peer this many chunk times (its own or the swarm's, the longer) past its last progress is stalled.
STALL_FACTOR = 3.0
#: How many of the swarm's chunk times sooner than its first copy is due a duplicate must come.
MARGIN = 3.0
#: Weight of the newest sample in a time per chunk (an exponential moving average).
_CHUNK_TIME_WEIGHT = 0.25
#: Bounds of :func:`recheck_after`.
_RECHECK = (0.01, 1.0)


@attrs.define(eq=False)
class Pace:
    """A time per chunk, as a moving average of the samples seen (None until the first)."""

    chunk_time: float | None = None

    def add(self, sample: float) -> None:
        previous = self.chunk_time
        self.chunk_time = sample if previous is None else previous + _CHUNK_TIME_WEIGHT * (sample - previous)


class Paced(Protocol):
    """What these helpers read and keep of a peer (the picker's per-peer state)."""

    holds: bytearray
    in_flight: dict[int, float]  # request -> when asked, in the order asked
    pace: Pace
    answered_at: float
    deferred: bool


def record_answer(state: Paced, swarm: Pace, asked: float, now: float) -> None:
    """``state``'s peer answered a request made at ``asked``, at ``now``: its pace and the ``swarm``'s take the sample."""
    sample = now - max(state.answered_at, asked)
    state.pace.add(sample)
    swarm.add(sample)
    state.answered_at = now


def recheck_after(state: Paced) -> float:
    """How soon a peer that picked nothing should look again (``inf``: once woken): about one of its chunk times."""
    if not state.deferred:
        return math.inf
    return min(max(state.pace.chunk_time or 0.0, _RECHECK[0]), _RECHECK[1])


def duplicate_for(state: Paced, peers: Iterable[Paced], now: float, *, swarm: Pace, tail: bool, requested: Mapping[int, Sized],
                  settled: bytearray, rank: list[float], copies: int) -> int | None:  # fmt: skip
    """The request outstanding at another of ``peers`` that ``state``'s peer should duplicate now, if any.

    ``swarm``: the swarm's time per chunk; ``tail``: the endgame proper (else
    only requests of stalled peers); ``requested``: who each chunk is asked
    of; ``settled``: chunks done or being verified; ``copies``: requests per
    chunk at most. Sets ``state.deferred`` when it passed over a request that
    may turn late.
    """
    mine = state.pace.chunk_time or 0.0  # not measured yet: it may have any
    typical = mine if swarm.chunk_time is None else swarm.chunk_time
    ready = now + (len(state.in_flight) + 1) * mine + MARGIN * typical
    best: tuple[int, float, float] | None = None
    best_index = -1
    holds = state.holds
    for other in peers:
        if other is state or not other.in_flight:
            continue
        own = other.pace.chunk_time
        pace = typical if own is None else own
        since = max(other.answered_at, next(iter(other.in_flight.values())))
        stalled = now - since > STALL_FACTOR * max(pace, typical)
        for position, index in enumerate(other.in_flight):
            if not holds[index] or settled[index] or index in state.in_flight or len(requested.get(index, ())) >= copies:
                continue
            # A stalled peer is taken to stay silent as long again as it has been: the longer, the more worth a copy.
            due = now + (now - since) + position * pace if stalled else since + (position + 1) * pace
            if ready > due or not (tail or stalled):
                state.deferred = True  # it may turn late: look again
                continue
            score = (len(requested[index]), -due, rank[index])
            if best is None or score < best:
                best, best_index = score, index
    return None if best is None else best_index
