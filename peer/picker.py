"""Which chunk to ask which peer for: the pure scheduling core of a download.

No trio, no sockets, no clocks: the download task tree (``peer/download.py``)
tells the picker what happened (a peer appeared, data arrived, a chunk
verified or failed) and asks it what to request next. Keeping it synchronous
makes every policy testable in isolation.

Policies, as in BitTorrent clients:

* **rarest first**: among the chunks a peer can give us, pick one held by the
  fewest live peers, random among equals (a fresh random rank per chunk, so
  downloaders spread over different chunks and the swarm gets every chunk
  quickly);
* **pipelining**: at most ``max_in_flight`` outstanding requests per peer;
* **endgame**: a peer may duplicate a request outstanding at another (at most
  ``endgame_copies`` per chunk) only when the first is late (``peer/endgame.py``);
  the first copy to arrive wins, and :meth:`Picker.on_arrival` returns the
  peers to send CANCEL_CHUNK at once;
* **banning**: a peer whose data fails verification ``ban_threshold`` times is
  banned for the rest of the download and its requests are reassigned.

Peers are identified by any hashable key (the download uses peer ids).

Costs stay small for files of up to ``MAX_CHUNKS`` chunks: each peer keeps a
heap of the idle chunks it holds keyed by (availability, rank), updated per
changed chunk (a change touching more than ``BULK_CHANGE`` chunks rebuilds the
heaps once, at the next pick); per-chunk flags are bytearrays
(``common.chunkset.mask_flags``). ``bench/picker.py`` prints the figures.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

import attrs

from common.chunkset import ChunkSet, flags_mask, mask_flags, mask_indexes
from peer.endgame import Pace, duplicate_for, recheck_after, record_answer

__all__ = ["Picker", "PeerKey"]

PeerKey = TypeVar("PeerKey", bound=Hashable)

#: An availability change touching more chunks than this rebuilds the pick heaps
#: (once, at the next pick) instead of pushing one entry per chunk and holder.
BULK_CHANGE = 4096

#: ``_settled`` values: missing (0), done, being verified.
_DONE, _VERIFYING = 1, 2
_DONE_DIGITS = bytes.maketrans(b"\0\1\2", b"010")


@attrs.define(eq=False)
class _PeerState:
    holds: bytearray  # one byte per chunk: 1 if the peer is believed to hold it
    chunks: int = 0  # the same as a bitmask
    #: Requests outstanding, in the order asked (the order the peer answers them), with when each was asked.
    in_flight: dict[int, float] = attrs.field(factory=dict)
    #: Its time per chunk, and when its last answer came.
    pace: Pace = attrs.field(factory=Pace)
    answered_at: float = -math.inf
    #: The last endgame pick found requests to duplicate later (when they are late enough): see ``recheck_after``.
    deferred: bool = False
    failures: int = 0
    #: Idle chunks it holds as (availability, rank, index), rarest first. Entries go
    #: stale (chunk no longer idle or held, availability changed) and are skipped when
    #: popped; a chunk whose key changes gets a fresh entry.
    heap: list[tuple[int, float, int]] = attrs.field(factory=list)
    heap_dirty: bool = True


@attrs.define(eq=False)
class Picker(Generic[PeerKey]):
    """Chunk scheduling for one file of ``chunk_count`` chunks of which ``have`` are already verified."""

    chunk_count: int
    max_in_flight: int = 8
    ban_threshold: int = 2
    endgame_copies: int = 2
    rng: random.Random = attrs.field(factory=random.Random)

    #: Verified chunks (bitmask).
    _done: int = attrs.field(init=False, default=0)
    #: Chunks whose data is being verified (bitmask): not requested again meanwhile.
    _verifying: int = attrs.field(init=False, default=0)
    #: Chunk -> peers it is requested from.
    _requested: dict[int, set[PeerKey]] = attrs.field(init=False, factory=dict)
    _peers: dict[PeerKey, _PeerState] = attrs.field(init=False, factory=dict)
    _banned: set[PeerKey] = attrs.field(init=False, factory=set)
    #: The time per chunk of every peer's answers together: how fast the swarm delivers (``peer/endgame.py``).
    _swarm: Pace = attrs.field(init=False, factory=Pace)
    _availability: list[int] = attrs.field(init=False)
    _rank: list[float] = attrs.field(init=False)
    #: Per chunk: ``_DONE``, ``_VERIFYING`` or 0 (the bitmasks as bytes: O(1) to test).
    _settled: bytearray = attrs.field(init=False)
    #: Chunks requested at least once (one byte per chunk), to count re-fetches.
    _ever_requested: bytearray = attrs.field(init=False)
    refetched: int = attrs.field(init=False, default=0)
    duplicates: int = attrs.field(init=False, default=0)
    #: Chunks whose data came once more after a copy was already in (endgame duplicates that crossed their cancel).
    surplus: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._availability = [0] * self.chunk_count
        self._rank = [self.rng.random() for _ in range(self.chunk_count)]
        self._settled = bytearray(self.chunk_count)
        self._ever_requested = bytearray(self.chunk_count)

    # -- what we have ------------------------------------------------------
    def mark_have(self, indexes: Iterable[int]) -> None:
        """Chunks verified before the download started (resume)."""
        for index in indexes:
            self._settled[index] = _DONE
        self._done = flags_mask(self._settled, _DONE_DIGITS)

    @property
    def have(self) -> ChunkSet:
        return ChunkSet(self.chunk_count, self._done)

    @property
    def complete(self) -> bool:
        return self._done == (1 << self.chunk_count) - 1

    @property
    def in_flight_total(self) -> int:
        return sum(len(p.in_flight) for p in self._peers.values())

    @property
    def verifying_count(self) -> int:
        return self._verifying.bit_count()

    @property
    def endgame(self) -> bool:
        """True once no missing chunk is left unrequested."""
        return not self._idle_mask() and not self.complete

    # -- peers -------------------------------------------------------------
    @property
    def peers(self) -> list[PeerKey]:
        return list(self._peers)

    def is_banned(self, key: PeerKey) -> bool:
        return key in self._banned

    def set_peer_chunks(self, key: PeerKey, chunks: ChunkSet) -> None:
        """Add ``key`` or replace what it is believed to hold. Banned peers are ignored."""
        if key in self._banned:
            return
        state = self._peers.get(key)
        if state is None:
            state = self._peers[key] = _PeerState(bytearray(self.chunk_count))
        old, new = state.chunks, chunks.mask
        # Only the chunks that changed hands move the availability counts.
        lost, gained = old & ~new, new & ~old
        state.chunks = new
        if lost | gained:
            lost_indexes, gained_indexes = mask_indexes(lost), mask_indexes(gained)
            if len(lost_indexes) + len(gained_indexes) > BULK_CHANGE:
                state.holds = mask_flags(new, self.chunk_count)
            else:
                for index in lost_indexes:
                    state.holds[index] = 0
                for index in gained_indexes:
                    state.holds[index] = 1
            self._change_availability(lost_indexes, -1)
            self._change_availability(gained_indexes, +1)

    def peer_has(self, key: PeerKey, index: int) -> bool:
        state = self._peers.get(key)
        return state is not None and 0 <= index < self.chunk_count and bool(state.holds[index])

    def in_flight(self, key: PeerKey) -> frozenset[int]:
        state = self._peers.get(key)
        return frozenset(state.in_flight) if state is not None else frozenset()

    def remove_peer(self, key: PeerKey) -> None:
        """The peer is gone: forget its chunks; its requests go back to the pool."""
        state = self._peers.pop(key, None)
        if state is None:
            return
        self._change_availability(mask_indexes(state.chunks), -1)
        for index in state.in_flight:
            self._unrequest(key, index)

    def useful_peers(self) -> list[PeerKey]:
        """Peers holding at least one chunk we still miss."""
        missing = self._missing_mask()
        return [key for key, state in self._peers.items() if state.chunks & missing]

    def unavailable(self) -> list[int]:
        """Missing chunks that no known peer holds."""
        return mask_indexes(self.unavailable_mask())

    def unavailable_mask(self) -> int:
        """:meth:`unavailable` as a mask."""
        held = 0
        for state in self._peers.values():
            held |= state.chunks
        return self._missing_mask() & ~held

    # -- picking -----------------------------------------------------------
    def pick(self, key: PeerKey, *, limit: int | None = None, endgame: bool = True, now: float = 0.0) -> int | None:
        """The next chunk to request from ``key`` at time ``now``, recorded as in flight; None if none now.

        ``limit``: fewer than ``max_in_flight`` in flight for this peer; ``endgame=False``:
        no duplicate requests (a peer on trial must not hold the last chunks hostage).
        """
        state = self._peers.get(key)
        if state is None or len(state.in_flight) >= (self.max_in_flight if limit is None else min(limit, self.max_in_flight)):
            return None
        state.deferred = False
        index = self._pick_idle(state)
        if index is None:
            if not endgame:
                return None
            index = self._pick_endgame(key, state, now)
            if index is None:
                return None
            self.duplicates += 1
        elif self._ever_requested[index]:
            self.refetched += 1
        self._ever_requested[index] = 1
        state.in_flight[index] = now
        self._requested.setdefault(index, set()).add(key)
        return index

    def pick_many(self, key: PeerKey, *, limit: int | None = None, endgame: bool = True, now: float = 0.0) -> list[int]:
        """Fill ``key``'s pipeline: every chunk to request from it now (``limit``, ``endgame``, ``now``: see :meth:`pick`)."""
        picked: list[int] = []
        while (index := self.pick(key, limit=limit, endgame=endgame, now=now)) is not None:
            picked.append(index)
        return picked

    def recheck_after(self, key: PeerKey) -> float:
        """How soon ``key``, having picked nothing, should pick again without being woken (``inf``: only once woken).

        Set when its last endgame pick passed over requests that may yet turn
        late (``peer/endgame.py``): nothing else wakes it then.
        """
        state = self._peers.get(key)
        return math.inf if state is None else recheck_after(state)

    def _pick_idle(self, state: _PeerState) -> int | None:
        if state.heap_dirty:
            self._rebuild_heap(state)
        heap, availability, holds = state.heap, self._availability, state.holds
        while heap:
            count, _, index = heap[0]
            heapq.heappop(heap)
            if holds[index] and availability[index] == count and self._is_idle(index):
                return index
        return None

    def _pick_endgame(self, key: PeerKey, state: _PeerState, now: float) -> int | None:
        return duplicate_for(state, self._peers.values(), now, swarm=self._swarm, tail=self._in_endgame(), requested=self._requested,
                             settled=self._settled, rank=self._rank, copies=self.endgame_copies)  # fmt: skip

    def _in_endgame(self) -> bool:
        """True if every missing chunk some peer holds is requested (or being verified)."""
        idle = self._idle_mask()
        held = 0
        for state in self._peers.values():
            held |= state.chunks
        return not idle & held

    def _rebuild_heap(self, state: _PeerState) -> None:
        availability, rank = self._availability, self._rank
        state.heap = [(availability[i], rank[i], i) for i in mask_indexes(state.chunks & self._idle_mask())]
        heapq.heapify(state.heap)
        state.heap_dirty = False

    # -- outcomes ----------------------------------------------------------
    def on_data(self, key: PeerKey, index: int, now: float = 0.0) -> bool:
        """Data for ``index`` arrived from ``key`` at time ``now``: True if it should be verified, False to discard it.

        Data nobody asked for is still welcome while the chunk is missing and
        no other copy is being verified (a cancelled endgame request that the
        server had already started).
        """
        state = self._peers.get(key)
        if state is not None:
            asked = state.in_flight.pop(index, None)
            if asked is not None:
                record_answer(state, self._swarm, asked, now)
        self._drop_request(key, index)
        if not 0 <= index < self.chunk_count:
            return False
        if self._settled[index]:
            self.surplus += 1
            return False
        self._verifying |= 1 << index
        self._settled[index] = _VERIFYING
        return True

    def on_arrival(self, key: PeerKey, index: int) -> list[PeerKey]:
        """The copy of ``index`` from ``key`` that :meth:`on_data` accepted is in: the other peers to send CANCEL_CHUNK.

        Their requests end now, before the chunk is verified: each moment
        counts, as a server puts queued chunks in its socket buffers, where a
        cancel no longer reaches them. Should this copy fail verification, the
        chunk is requested again like any other.
        """
        others = []
        for other in self._requested.pop(index, ()):
            state = self._peers.get(other)
            if other != key and state is not None and state.in_flight.pop(index, None) is not None:
                others.append(other)
        return others

    def on_verified(self, key: PeerKey, index: int) -> list[tuple[PeerKey, int]]:
        """``index`` from ``key`` verified and written: returns the (peer, chunk) requests to cancel."""
        self._verifying &= ~(1 << index)
        self._done |= 1 << index
        self._settled[index] = _DONE
        cancels = []
        for other in self._requested.pop(index, set()):
            other_state = self._peers.get(other)
            if other_state is not None:
                other_state.in_flight.pop(index, None)
                cancels.append((other, index))
        return cancels

    def on_hash_failure(self, key: PeerKey, index: int) -> bool:
        """``key`` sent bad data for ``index``: returns True if that got it banned."""
        self._unsettle(index)
        state = self._peers.get(key)
        if state is None:
            return key in self._banned
        state.failures += 1
        # Never ask that peer for that chunk again.
        self._forget(state, index)
        if state.failures >= self.ban_threshold:
            self._banned.add(key)
            self.remove_peer(key)
            return True
        return False

    def on_rejected(self, key: PeerKey, index: int, *, not_held: bool) -> None:
        """The peer answered ``index`` with an error (or we gave up on it); it goes back to the pool.

        ``not_held``: the peer does not have it, so stop believing it does.
        """
        state = self._peers.get(key)
        if state is not None:
            state.in_flight.pop(index, None)
            if not_held:
                self._forget(state, index)
        self._unrequest(key, index)

    def on_not_kept(self, index: int) -> None:
        """Data :meth:`on_data` accepted is not kept (its check never started, or it could not be stored): missing again."""
        self._unsettle(index)

    def on_lost(self, index: int) -> None:
        """A chunk already verified and written turned out bad on disk: it is missing again."""
        self._done &= ~(1 << index)
        self._unsettle(index)

    # -- internals ---------------------------------------------------------
    def _missing_mask(self) -> int:
        return ((1 << self.chunk_count) - 1) & ~self._done

    def _idle_mask(self) -> int:
        requested = 0
        for index in self._requested:
            requested |= 1 << index
        return self._missing_mask() & ~self._verifying & ~requested

    def _drop_request(self, key: PeerKey, index: int) -> None:
        requesters = self._requested.get(index)
        if requesters is not None:
            requesters.discard(key)
            if not requesters:
                del self._requested[index]

    def _unrequest(self, key: PeerKey, index: int) -> None:
        self._drop_request(key, index)
        self._requeue(index)

    def _unsettle(self, index: int) -> None:
        """``index`` is no longer being verified: missing again."""
        self._verifying &= ~(1 << index)
        self._settled[index] = 0
        self._requeue(index)

    def _forget(self, state: _PeerState, index: int) -> None:
        """Stop believing that ``state``'s peer holds ``index``."""
        if 0 <= index < self.chunk_count and state.holds[index]:
            state.holds[index] = 0
            state.chunks &= ~(1 << index)
            self._change_availability([index], -1)

    def _is_idle(self, index: int) -> bool:
        return not self._settled[index] and index not in self._requested

    def _requeue(self, index: int) -> None:
        """Give an idle ``index`` a fresh heap entry at every peer holding it."""
        if not 0 <= index < self.chunk_count or not self._is_idle(index):
            return
        entry = (self._availability[index], self._rank[index], index)
        for state in self._peers.values():
            if state.holds[index] and not state.heap_dirty:
                heapq.heappush(state.heap, entry)
                if len(state.heap) > 2 * self.chunk_count + 64:
                    state.heap_dirty = True  # mostly stale entries: rebuild at the next pick

    def _change_availability(self, indexes: list[int], delta: int) -> None:
        availability = self._availability
        for index in indexes:
            availability[index] += delta
        if len(indexes) > BULK_CHANGE:
            for state in self._peers.values():
                state.heap_dirty = True
        else:
            for index in indexes:
                self._requeue(index)
