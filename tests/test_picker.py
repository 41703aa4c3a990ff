"""The chunk picker: pure, synchronous, no trio."""

from __future__ import annotations

import random

import pytest

from common.chunkset import ChunkSet
from common.manifest import MAX_CHUNKS
from peer.endgame import STALL_FACTOR
from peer.picker import Picker


def make(count: int, **kwargs: object) -> Picker:
    return Picker(count, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]


def full(count: int) -> ChunkSet:
    return ChunkSet.full(count)


def test_rarest_first_order() -> None:
    picker = make(4, max_in_flight=10)
    picker.set_peer_chunks("a", full(4))
    picker.set_peer_chunks("b", ChunkSet.from_indexes(4, [0, 1, 2]))
    picker.set_peer_chunks("c", ChunkSet.from_indexes(4, [0, 1]))
    # Availability: 0 -> 3, 1 -> 3, 2 -> 2, 3 -> 1.
    assert picker.pick_many("a")[:2] == [3, 2]


def test_random_tie_break_differs_between_pickers() -> None:
    orders = set()
    for seed in range(8):
        picker = Picker(16, max_in_flight=16, rng=random.Random(seed))
        picker.set_peer_chunks("a", full(16))
        orders.add(tuple(picker.pick_many("a")))
    assert len(orders) > 1


def test_pipeline_limit_and_only_held_chunks() -> None:
    picker = make(10, max_in_flight=3)
    picker.set_peer_chunks("a", ChunkSet.from_indexes(10, [1, 5, 7, 9]))
    picked = picker.pick_many("a")
    assert len(picked) == 3 and set(picked) <= {1, 5, 7, 9}
    assert picker.pick("a") is None
    assert picker.on_data("a", picked[0])
    assert picker.pick("a") is not None  # a slot freed


def test_have_chunks_are_never_picked() -> None:
    picker = make(4, max_in_flight=10)
    picker.mark_have([0, 2])
    picker.set_peer_chunks("a", full(4))
    assert sorted(picker.pick_many("a")) == [1, 3]


def test_verify_completes() -> None:
    picker = make(2, max_in_flight=10)
    picker.set_peer_chunks("a", full(2))
    for index in picker.pick_many("a"):
        assert picker.on_data("a", index)
        assert picker.on_verified("a", index) == []
    assert picker.complete and len(picker.have) == 2


def test_a_chunk_lost_after_verification_is_missing_again() -> None:
    picker = make(3, max_in_flight=10)
    picker.set_peer_chunks("a", full(3))
    for index in picker.pick_many("a"):
        assert picker.on_data("a", index)
        picker.on_verified("a", index)
    assert picker.complete
    picker.on_lost(1)
    assert not picker.complete and list(picker.have) == [0, 2]
    assert picker.pick_many("a") == [1]


def test_endgame_duplicates_and_cancels() -> None:
    picker = make(2, max_in_flight=10, endgame_copies=2)
    picker.set_peer_chunks("a", full(2))
    picker.set_peer_chunks("b", full(2))
    assert sorted(picker.pick_many("a")) == [0, 1]
    assert picker.endgame
    # b is idle: it duplicates a's outstanding requests.
    assert sorted(picker.pick_many("b")) == [0, 1]
    assert picker.duplicates == 2
    # No third copy with endgame_copies=2.
    picker.set_peer_chunks("c", full(2))
    assert picker.pick("c") is None
    # b answers chunk 1 first: a's request for 1 is cancelled.
    assert picker.on_data("b", 1)
    assert picker.on_verified("b", 1) == [("a", 1)]
    assert picker.in_flight("a") == {0}
    # a's late copy of 1 is discarded, and counted: a chunk received twice.
    assert picker.surplus == 0
    assert not picker.on_data("a", 1)
    assert picker.surplus == 1


def test_endgame_not_while_idle_chunks_remain() -> None:
    picker = make(3, max_in_flight=1)
    picker.set_peer_chunks("a", full(3))
    picker.set_peer_chunks("b", full(3))
    first = picker.pick("a")
    second = picker.pick("b")
    assert first != second and not picker.endgame


def test_data_being_verified_is_not_duplicated() -> None:
    picker = make(1, max_in_flight=4)
    picker.set_peer_chunks("a", full(1))
    picker.set_peer_chunks("b", full(1))
    assert picker.pick("a") == 0
    assert picker.on_data("a", 0)
    assert picker.pick("b") is None
    assert not picker.on_data("b", 0)  # unsolicited copy while verifying


def test_hash_failure_reassigns_and_bans() -> None:
    picker = make(4, max_in_flight=4, ban_threshold=2)
    picker.set_peer_chunks("bad", full(4))
    picker.set_peer_chunks("good", full(4))
    picked = picker.pick_many("bad")
    assert len(picked) == 4
    first, second = picked[0], picked[1]
    assert picker.on_data("bad", first)
    assert not picker.on_hash_failure("bad", first)
    assert not picker.peer_has("bad", first)  # never asked for that chunk again
    assert picker.pick("good") == first
    assert picker.refetched == 1
    assert picker.on_data("bad", second)
    assert picker.on_hash_failure("bad", second)
    assert picker.is_banned("bad") and "bad" not in picker.peers
    # Everything the banned peer had in flight is requestable again.
    assert sorted(picker.pick_many("good")) == sorted(set(picked) - {first})
    # A banned peer stays out.
    picker.set_peer_chunks("bad", full(4))
    assert picker.pick("bad") is None and "bad" not in picker.peers


def test_dead_peer_requests_are_reassigned() -> None:
    picker = make(4, max_in_flight=4)
    picker.set_peer_chunks("a", full(4))
    picker.set_peer_chunks("b", full(4))
    taken = picker.pick_many("a")
    assert picker.pick_many("b") != []  # endgame duplicates
    picker.remove_peer("a")
    assert picker.in_flight_total == len(picker.in_flight("b"))
    picker.set_peer_chunks("c", full(4))
    assert set(picker.pick_many("c")) | picker.in_flight("b") >= set(taken)


def test_not_held_rejection_updates_belief() -> None:
    picker = make(2, max_in_flight=4)
    picker.set_peer_chunks("a", full(2))
    for index in picker.pick_many("a"):
        picker.on_rejected("a", index, not_held=True)
    assert picker.pick("a") is None
    assert sorted(picker.unavailable()) == [0, 1]
    picker.set_peer_chunks("b", ChunkSet.from_indexes(2, [1]))
    assert picker.unavailable() == [0]
    assert picker.useful_peers() == ["b"]


def test_busy_rejection_keeps_belief() -> None:
    picker = make(1, max_in_flight=4)
    picker.set_peer_chunks("a", full(1))
    assert picker.pick("a") == 0
    picker.on_rejected("a", 0, not_held=False)
    assert picker.pick("a") == 0


def test_availability_update_changes_order() -> None:
    picker = make(3, max_in_flight=1)
    picker.set_peer_chunks("a", full(3))
    picker.set_peer_chunks("b", ChunkSet.from_indexes(3, [0, 1]))
    assert picker.pick("a") == 2
    picker.on_rejected("a", 2, not_held=False)
    picker.set_peer_chunks("b", ChunkSet.from_indexes(3, [1, 2]))
    assert picker.pick("a") == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_swarm_always_completes(seed: int) -> None:
    rng = random.Random(seed)
    count = 40
    picker = Picker(count, max_in_flight=3, rng=rng)
    peers = {f"p{i}": ChunkSet.from_indexes(count, rng.sample(range(count), 25)) for i in range(5)}
    peers["seed"] = full(count)
    for key, chunks in peers.items():
        picker.set_peer_chunks(key, chunks)
    for _ in range(10_000):
        if picker.complete:
            break
        key = rng.choice(picker.peers)
        index = picker.pick(key)
        if index is None:
            flight = picker.in_flight(key)
            if flight:
                done = rng.choice(sorted(flight))
                if picker.on_data(key, done):
                    picker.on_verified(key, done)
    assert picker.complete


def test_large_file_stays_rarest_first_through_availability_changes() -> None:
    # MAX_CHUNKS chunks and 8 peers: picks and availability changes are incremental
    # (re-sorting every chunk per change took seconds at this size).
    count, rng = MAX_CHUNKS, random.Random(3)
    picker = make(count, max_in_flight=4)
    masks = {f"p{i}": rng.getrandbits(count) & rng.getrandbits(count) for i in range(8)}
    masks["p0"] = (1 << count) - 1  # a seed: every chunk has a holder
    for key, mask in masks.items():
        picker.set_peer_chunks(key, ChunkSet(count, mask))
    taken: set[int] = set()

    def check_pick(key: str) -> int:
        flags = {name: bin(mask)[:1:-1] for name, mask in masks.items()}
        availability = [0] * count
        for bits in flags.values():
            for i, bit in enumerate(bits):
                if bit == "1":
                    availability[i] += 1
        rarest = min(availability[i] for i, bit in enumerate(flags[key]) if bit == "1" and i not in taken)
        index = picker.pick(key)
        assert index is not None and index not in taken and masks[key] >> index & 1
        assert availability[index] == rarest
        taken.add(index)
        return index

    check_pick("p1")
    # Availability moves both ways: two peers gain chunks, one leaves.
    for key in ("p2", "p3"):
        masks[key] |= masks["p1"] >> 1
        picker.set_peer_chunks(key, ChunkSet(count, masks[key]))
    picker.remove_peer("p4")
    del masks["p4"]
    for key in masks:
        index = check_pick(key)
        assert picker.on_data(key, index) and picker.on_verified(key, index) == []
    assert len(picker.have) == len(taken) - 1  # verified: every pick but the first, still in flight


def answer(picker: Picker, key: str, index: int, now: float) -> None:
    assert picker.on_data(key, index, now)
    picker.on_verified(key, index)


def test_endgame_duplicates_only_what_the_other_peer_would_deliver_later() -> None:
    # libtorrent's rule: a second peer only for a request whose first peer is slow. Duplicating every
    # outstanding request at once (the old rule) sent 18-24% more bytes than needed at 16 downloaders.
    picker = make(10, max_in_flight=5)
    picker.set_peer_chunks("slow", full(10))
    picker.set_peer_chunks("fast", full(10))
    slow, fast = picker.pick_many("slow", now=0.0), picker.pick_many("fast", now=0.0)
    for step, index in enumerate(fast):  # one chunk every 0.1 s
        answer(picker, "fast", index, 0.1 * (step + 1))
    answer(picker, "slow", slow[0], 0.4)  # 0.4 s a chunk: the other four are due at 0.8, 1.2, 1.6 and 2.0
    # The swarm's chunk time is 0.175 s (five samples of 0.1, one of 0.4). At 0.5 "fast" would deliver
    # a first duplicate by 0.6 and a second by 0.7, MARGIN (3) of the swarm's chunk times before it is
    # due only for the ones due at 2.0 and 1.6: it takes them, last first (where the cancel comes in time).
    assert picker.pick_many("fast", now=0.5) == [slow[4], slow[3]]
    assert picker.duplicates == 2 and picker.recheck_after("fast") == pytest.approx(0.1)
    # Delivered as expected: each copy at "slow" is cancelled as it comes, and nothing is left worth a second copy.
    for step, index in enumerate([slow[4], slow[3]]):
        assert picker.on_data("fast", index, 0.6 + 0.1 * step)
        assert picker.on_arrival("fast", index) == ["slow"]
        assert picker.on_verified("fast", index) == []
    assert picker.in_flight("slow") == {slow[1], slow[2]}
    assert picker.pick_many("fast", now=0.8) == []


def test_endgame_duplicates_every_request_of_a_stalled_peer() -> None:
    picker = make(6, max_in_flight=3)
    picker.set_peer_chunks("stuck", full(6))
    picker.set_peer_chunks("fast", full(6))
    stuck, fast = picker.pick_many("stuck", now=0.0), picker.pick_many("fast", now=0.0)
    answer(picker, "stuck", stuck[0], 0.5)  # 0.5 s a chunk: the next two are due at 1.0 and 1.5
    for step, index in enumerate(fast):
        answer(picker, "fast", index, 0.1 + 0.05 * step)
    # "fast" (0.08 s a chunk; the swarm 0.25) could bring neither three swarm chunk times before it is due.
    assert picker.pick_many("fast", now=0.9) == [] and picker.recheck_after("fast") < 0.1
    assert picker.pick_many("fast", now=0.5 + STALL_FACTOR * 0.5 - 0.01) == []
    # Nothing from it for over STALL_FACTOR of its chunk times: it is taken to stay silent as long
    # again, and both its requests go to the other peer too, the one due last first.
    assert picker.pick_many("fast", now=0.5 + STALL_FACTOR * 0.5 + 0.01) == [stuck[2], stuck[1]]


def test_endgame_duplicates_requests_of_a_peer_that_never_answered_once_it_is_late() -> None:
    picker = make(4, max_in_flight=2)
    picker.set_peer_chunks("silent", full(4))
    picker.set_peer_chunks("fast", full(4))
    silent, fast = picker.pick_many("silent", now=0.0), picker.pick_many("fast", now=0.0)
    for index in fast:
        answer(picker, "fast", index, 0.1)  # about 0.075 s a chunk, for it and the swarm
    # "silent" is taken to be as fast as the swarm until STALL_FACTOR of its chunk times have passed.
    assert picker.pick_many("fast", now=0.2) == [] and picker.recheck_after("fast") < 0.1
    assert sorted(picker.pick_many("fast", now=0.4)) == sorted(silent)
    assert picker.recheck_after("fast") == float("inf")  # nothing passed over: it waits to be woken


def test_a_burst_of_answers_does_not_make_a_peer_stalled_moments_later() -> None:
    # Issue 16: chunks wait in socket buffers while a busy downloader reads other peers, and come
    # in bursts. Judged by its own chunk time (a millisecond after a burst), a peer was stalled
    # after a few milliseconds of quiet and its requests sent twice; the swarm delivers a chunk
    # per peer every 0.1-0.2 s, so it is not late at all.
    picker = make(8, max_in_flight=4)
    picker.set_peer_chunks("steady", full(8))
    steady = picker.pick_many("steady", now=0.0)
    for step, index in enumerate(steady):
        answer(picker, "steady", index, 0.2 * (step + 1))
    picker.set_peer_chunks("bursty", full(8))
    bursty = picker.pick_many("bursty", now=0.8)
    answer(picker, "bursty", bursty[0], 0.801)
    answer(picker, "bursty", bursty[1], 0.802)
    assert picker.endgame
    assert picker.pick_many("steady", now=0.85) == []  # the old rule: both of "bursty"'s, 48 ms into its quiet
    assert picker.duplicates == 0


def test_on_arrival_returns_the_other_peers_the_chunk_is_asked_of() -> None:
    picker = make(3, max_in_flight=3, endgame_copies=3)
    for key in ("a", "b", "c"):
        picker.set_peer_chunks(key, full(3))
    picker.pick_many("a", now=0.0)
    picker.pick_many("b", now=10.0)  # "a" is stalled by then: "b" and "c" duplicate its requests
    picker.pick_many("c", now=10.0)
    assert picker.in_flight("b") == picker.in_flight("c") == {0, 1, 2}
    # The first copy of chunk 1 arrives from "b": "a" and "c" are to be sent CANCEL_CHUNK now, before it is verified.
    assert picker.on_data("b", 1, 10.1)
    assert sorted(picker.on_arrival("b", 1)) == ["a", "c"]
    assert picker.in_flight("a") == picker.in_flight("c") == {0, 2}
    assert picker.on_verified("b", 1) == []  # nothing left to cancel
    # A copy that crossed its cancel is discarded; a chunk asked of one peer only cancels nothing.
    assert not picker.on_data("c", 1, 10.2) and picker.surplus == 1
    assert picker.on_arrival("c", 1) == []
    # Should the first copy fail verification, the chunk is asked again like any other.
    assert picker.on_data("a", 0, 10.3) and sorted(picker.on_arrival("a", 0)) == ["b", "c"]
    assert not picker.on_hash_failure("a", 0)
    assert picker.pick_many("b", now=10.4) == [0]


def test_before_the_endgame_only_requests_of_stalled_peers_are_duplicated() -> None:
    # "b" holds nothing unrequested, but chunks "a" holds are not requested yet: the end is not near,
    # and a second copy of a request "a" is answering in time would only be a chunk sent twice.
    picker = make(8, max_in_flight=2)
    picker.set_peer_chunks("a", ChunkSet.from_indexes(8, [0, 1, 2, 3]))
    picker.set_peer_chunks("b", ChunkSet.from_indexes(8, [0, 1, 2, 3]))
    b_first = picker.pick_many("b", now=0.0)
    a_first = picker.pick_many("a", now=0.0)
    picker.set_peer_chunks("a", full(8))  # it has more now: chunks 4-7 are not requested yet
    assert set(a_first) | set(b_first) == {0, 1, 2, 3} and not picker.endgame
    answer(picker, "a", a_first[0], 1.0)
    for index in b_first:
        answer(picker, "b", index, 0.1)
    assert picker.pick_many("b", now=1.1) == []  # a's second request is due at 2.0: b could bring it first
    assert picker.pick_many("b", now=1.0 + STALL_FACTOR * 1.0 + 0.01) == [a_first[1]]  # "a" stalled
