"""peer/sources.py: which holders a download connects to (pure, no trio)."""

from __future__ import annotations

import random

import attrs

from common.address import ip_group
from common.chunkset import ChunkSet
from common.messages import Holder
from peer.sources import Sources, pool_by_address


def test_ip_group_is_the_address_for_ipv4_and_the_64_for_ipv6() -> None:
    assert ip_group("10.1.2.3") == "10.1.2.3"
    assert ip_group("2001:db8:1:2:aaaa::1") == ip_group("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert ip_group("2001:db8:1:3::1") != ip_group("2001:db8:1:2::1")
    assert ip_group("::ffff:10.1.2.3") == "10.1.2.3"


def test_holders_are_pooled_one_per_address() -> None:
    ids = [bytes([n]) * 20 for n in range(4)]
    holders = (Holder(ids[0], "10.0.0.1", 7000, b"\x80"), Holder(ids[1], "10.0.0.1", 7000, b"\x40"),
               Holder(ids[2], "10.0.0.1", 7001, b"\x20"), Holder(ids[3], "10.0.0.2", 7000, b"\xff"))  # fmt: skip
    pooled = pool_by_address(holders, 3, skip=ids[3])
    assert pooled == {("10.0.0.1", 7000): (ids[0], ChunkSet.from_indexes(3, [0, 1])), ("10.0.0.1", 7001): (ids[2], ChunkSet.from_indexes(3, [2]))}


def test_per_ip_cap_and_one_source_per_address() -> None:
    sources = Sources(max_per_ip=2, base_delay=2.0, max_delay=60.0)
    assert sources.may_connect(("10.0.0.1", 1), 0.0)
    sources.connect(("10.0.0.1", 1))
    assert not sources.may_connect(("10.0.0.1", 1), 0.0)  # already connected there
    sources.connect(("10.0.0.1", 2))
    assert not sources.may_connect(("10.0.0.1", 3), 0.0)  # two at that IP already
    assert sources.may_connect(("10.0.0.2", 3), 0.0)
    sources.ended(("10.0.0.1", 2), 0.0, delivered=True)
    assert sources.may_connect(("10.0.0.1", 3), 0.0)


def test_failing_addresses_back_off_exponentially_and_delivering_ones_do_not() -> None:
    sources = Sources(max_per_ip=8, base_delay=2.0, max_delay=10.0)
    address = ("10.0.0.1", 22)
    delays = []
    for _ in range(5):
        sources.connect(address)
        delays.append(sources.ended(address, 0.0, delivered=False))
    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert not sources.may_connect(address, 9.9) and sources.may_connect(address, 10.0)
    sources.connect(address)
    assert sources.ended(address, 0.0, delivered=True) == 2.0  # it delivered: the count starts over
    sources.connect(address)
    assert sources.ended(address, 0.0, delivered=False) == 2.0


def _holders(count: int) -> list[tuple[tuple[str, int], bytes, ChunkSet]]:
    return [((f"10.0.{n}.1", 7000), bytes([n]) * 20, ChunkSet.full(4)) for n in range(count)]


def test_downloaders_given_one_holder_list_do_not_all_try_its_first_holders() -> None:
    """Issue 16: with one list in one order, every downloader connected to the same first few and half the swarm never uploaded."""
    firsts: set[tuple[str, int]] = set()
    for seed in range(16):  # 16 downloaders, each told of the same 17 holders in the same order
        sources = Sources(max_per_ip=8, base_delay=2.0, max_delay=60.0, rng=random.Random(seed))
        sources.offer_all(_holders(17))
        firsts.update(address for address, _, _ in sources.candidates()[:8])
    assert len(firsts) == 17  # between them they try every holder first; in list order, only the first 8


@attrs.define
class _Source:
    recent: int
    delivered: bool = True
    retiring: bool = False
    woken: bool = False
    name: str = "a source"
    address: tuple[str, int] = ("10.0.0.1", 7000)

    def wake(self) -> None:
        self.woken = True


def test_the_source_that_delivered_least_makes_room_for_a_waiting_holder() -> None:
    sources = Sources(max_per_ip=8, base_delay=2.0, max_delay=60.0)
    running = [_Source(5), _Source(1), _Source(3), _Source(0, delivered=False)]
    # No holder waiting: nobody is retired, but the counts start again.
    assert sources.rotate(running, 0.0, interval=1.0, places=3, wanted=0b1111) is None
    assert [s.recent for s in running] == [0, 0, 0, 0]
    sources.offer_all([(("10.0.9.1", 7000), b"w" * 20, ChunkSet.from_indexes(4, [2]))])
    running[0].recent, running[1].recent, running[2].recent = 4, 2, 6
    assert sources.rotate(running, 0.5, interval=1.0, places=3, wanted=0b1111) is None  # not yet: once per interval
    assert sources.rotate(running, 1.0, interval=1.0, places=3, wanted=0b1011) is None  # the waiting holder has nothing we want
    running[0].recent, running[1].recent, running[2].recent = 4, 2, 6
    assert sources.rotate(running, 2.0, interval=1.0, places=4, wanted=0b1111) is None  # a place is free: no need to make room
    running[0].recent, running[1].recent, running[2].recent = 4, 2, 6
    retired = sources.rotate(running, 3.0, interval=1.0, places=3, wanted=0b1111)
    assert retired is running[1] and retired.retiring and retired.woken
    assert not any(s.retiring for s in running if s is not retired)
    # A retiring source is no longer counted: the others are compared among themselves.
    assert sources.rotate(running, 4.0, interval=1.0, places=3, wanted=0b1111) is None


def test_a_source_makes_room_at_its_ip_when_the_cap_is_full() -> None:
    """On loopback every holder is at one IP: the per-IP cap is full, and the waiting holder may come in once one of them ends."""
    sources = Sources(max_per_ip=2, base_delay=2.0, max_delay=60.0)
    running = [_Source(3, address=("127.0.0.1", 1)), _Source(1, address=("127.0.0.1", 2))]
    for source in running:
        sources.connect(source.address)
    sources.offer_all([(("127.0.0.1", 3), b"w" * 20, ChunkSet.full(4))])
    assert not sources.may_connect(("127.0.0.1", 3), 0.0)
    assert sources.rotate(running, 0.0, interval=1.0, places=2, wanted=0b1111) is running[1]


def test_a_holder_listed_after_the_first_answer_is_not_behind_all_of_it() -> None:
    """Issue 16: a holder that registered a moment after the downloaders' first answer was last in every
    downloader's list, first asked 8 s into a 10 s download, and served 1% of the bytes."""
    late = (("10.0.99.1", 7000), b"L" * 20, ChunkSet.full(4))
    ranks = []
    for seed in range(200):  # 200 downloaders: 16 holders in the first answer, one more in the next
        sources = Sources(max_per_ip=8, base_delay=2.0, max_delay=60.0, rng=random.Random(seed))
        sources.offer_all(_holders(16))
        for address, _, _ in sources.candidates()[:8]:  # the first places are taken
            sources.connect(address)
        sources.offer_all([late])
        ranks.append([address for address, _, _ in sources.candidates()].index(late[0]))
    # Nine wait for the next free place: the late one is first for about one in nine (the first listed first: never).
    assert 10 <= ranks.count(0) <= 50
    assert sum(ranks) / len(ranks) < 6


def test_holders_never_connected_to_come_before_those_tried_before() -> None:
    """As libtorrent's connect candidates: a holder we left (or that refused us) waits behind those not yet tried."""
    sources = Sources(max_per_ip=8, base_delay=0.0, max_delay=0.0, rng=random.Random(1))
    tried = _holders(4)
    for address, _, _ in tried:
        sources.connect(address)
        sources.ended(address, 0.0, delivered=True)
    fresh = [((f"10.0.{n}.1", 7000), bytes([n]) * 20, ChunkSet.full(4)) for n in range(10, 14)]
    sources.offer_all([*tried, *fresh])
    order = [address for address, _, _ in sources.candidates()]
    assert set(order[:4]) == {address for address, _, _ in fresh}


def test_a_holder_with_chunks_no_source_has_comes_first_even_if_tried_before() -> None:
    """Issue 16: the seeder refused all but 8 of 16 downloaders and, tried once, was behind every other holder;
    the others never got a chunk from it and held only what the rest had (they uploaded 2-4 times less)."""
    sources = Sources(max_per_ip=8, base_delay=0.0, max_delay=0.0, rng=random.Random(1))
    seeder = (("10.0.0.1", 7000), b"S" * 20, ChunkSet.full(4))
    sources.connect(seeder[0])
    sources.ended(seeder[0], 0.0, delivered=True)  # it said BUSY
    fresh = [((f"10.0.{n}.1", 7000), bytes([n]) * 20, ChunkSet.from_indexes(4, [0, 1])) for n in range(10, 14)]
    sources.offer_all([seeder, *fresh])
    assert sources.candidates(rare=0b1100)[0][0] == seeder[0]  # chunks 2 and 3: our sources have none
    assert sources.candidates(rare=0)[-1][0] == seeder[0]  # nothing rare: those not tried yet first
