"""Endgame duplicates: a second peer for a request only when the first is slow (libtorrent's rule).

Pure helpers of :class:`~peer.picker.Picker`. Once every missing chunk some
peer holds is requested, a peer with room in its pipeline may ask for a chunk
already requested from another peer. Each copy that arrives second is a chunk
sent for nothing: its cancel comes too late once a server has put the chunk in
its socket buffers (on loopback, a whole pipeline of 1 MiB chunks).
Duplicating every outstanding request at once sent 18-24% more bytes than
needed at 16 downloaders, so a duplicate is asked for only when it is worth it:

* each peer's **time per chunk** is measured as its answers arrive (a moving
  average of the time since the later of its previous answer and the request);
* peers answer in request order, so the ``k``-th request in a peer's queue is
  **due** ``k + 1`` chunk times after its last progress (its last answer, or
  its oldest request if later);
* a peer may duplicate a request only if it would deliver it, behind its own
  pipeline, ``1.5`` of its chunk times before it is due: the fewest copies
  first, then the request due **last** (the furthest back in its queue, so the
  cancel may reach the first peer before it sends it), then the rarest;
* a peer that has answered nothing is taken to be as fast as the one asking;
  one ``STALL_FACTOR`` chunk times past its last progress is **stalled**, and
  every request it holds may be duplicated at once, even before the endgame;
* a peer that passed over requests that may turn late looks again after
  about one of its own chunk times (:func:`recheck_after`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sized
from typing import Protocol

__all__ = ["STALL_FACTOR", "Paced", "duplicate_for", "record_answer", "recheck_after"]

#: A peer this many of its chunk times past its last progress is stalled: every request it holds may be duplicated.
STALL_FACTOR = 3.0
#: How many of its own chunk times a peer must deliver a duplicate before the first copy is due.
_MARGIN = 1.5
#: Weight of the newest sample in a peer's time per chunk (an exponential moving average).
_CHUNK_TIME_WEIGHT = 0.25
#: Bounds of :func:`recheck_after`.
_RECHECK = (0.01, 1.0)


class Paced(Protocol):
    """What these helpers read and keep of a peer (the picker's per-peer state)."""

    holds: bytearray
    in_flight: dict[int, float]  # request -> when asked, in the order asked
    chunk_time: float | None
    answered_at: float
    deferred: bool


def record_answer(state: Paced, asked: float, now: float) -> None:
    """``state``'s peer answered a request made at ``asked``, at ``now``."""
    sample = now - max(state.answered_at, asked)
    previous = state.chunk_time
    state.chunk_time = sample if previous is None else previous + _CHUNK_TIME_WEIGHT * (sample - previous)
    state.answered_at = now


def recheck_after(state: Paced) -> float:
    """How soon a peer that picked nothing should look again (``inf``: once woken): about one of its chunk times."""
    if not state.deferred:
        return math.inf
    return min(max(state.chunk_time or 0.0, _RECHECK[0]), _RECHECK[1])


def duplicate_for(state: Paced, peers: Iterable[Paced], now: float, *, tail: bool, requested: Mapping[int, Sized],
                  settled: bytearray, rank: list[float], copies: int) -> int | None:  # fmt: skip
    """The request outstanding at another of ``peers`` that ``state``'s peer should duplicate now, if any.

    ``tail``: the endgame proper (else only requests of stalled peers);
    ``requested``: who each chunk is asked of; ``settled``: chunks done or
    being verified; ``copies``: requests per chunk at most. Sets
    ``state.deferred`` when it passed over a request that may turn late.
    """
    mine = state.chunk_time or 0.0  # not measured yet: it may have any
    ready = now + (len(state.in_flight) + _MARGIN) * mine
    best: tuple[int, float, float] | None = None
    best_index = -1
    holds = state.holds
    for other in peers:
        if other is state or not other.in_flight:
            continue
        pace = mine if other.chunk_time is None else other.chunk_time
        since = max(other.answered_at, next(iter(other.in_flight.values())))
        stalled = now - since > STALL_FACTOR * pace
        for position, index in enumerate(other.in_flight):
            if not holds[index] or settled[index] or index in state.in_flight or len(requested.get(index, ())) >= copies:
                continue
            due = math.inf if stalled else since + (position + 1) * pace
            if ready > due or not (tail or stalled):
                state.deferred = True  # it may turn late: look again
                continue
            score = (len(requested[index]), -due, rank[index])
            if best is None or score < best:
                best, best_index = score, index
    return None if best is None else best_index
