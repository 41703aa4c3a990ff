"""tracker.bittorrent.swarms: the pure state of BitTorrent swarms, under a fake clock."""

from __future__ import annotations

import random

import pytest

from tracker.bittorrent.errors import BtFailure
from tracker.bittorrent.swarms import EVENT_COMPLETED, EVENT_STARTED, EVENT_STOPPED, Swarms, compact_entry

HASH = b"h" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pid(i: int) -> bytes:
    return b"-TEST00-%012d" % i


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def swarms(clock: Clock) -> Swarms:
    return Swarms(2700.0, clock, random.Random(1))


def entries(blob: bytes, size: int = 6) -> set[bytes]:
    return {blob[i : i + size] for i in range(0, len(blob), size)}


def test_announce_counts_seeders_and_leechers_and_hands_out_others(swarms: Swarms) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 6881, left=0, event=EVENT_STARTED)
    peers = swarms.announce(HASH, pid(2), "10.0.0.2", 6882, left=100, event=EVENT_STARTED)
    assert (peers.seeders, peers.leechers, peers.downloaded) == (1, 1, 0)
    assert peers.peers4 == compact_entry("10.0.0.1", 6881)  # never the asker itself
    assert swarms.scrape(HASH) == (1, 0, 1)


def test_the_asker_is_never_in_its_own_answer(swarms: Swarms) -> None:
    for i in range(30):
        swarms.announce(HASH, pid(i), f"10.0.0.{i}", 6000 + i, left=1)
    mine = compact_entry("10.0.0.7", 6007)
    for _ in range(200):
        peers = swarms.announce(HASH, pid(7), "10.0.0.7", 6007, left=1, numwant=5)
        got = [peers.peers4[i : i + 6] for i in range(0, len(peers.peers4), 6)]
        assert len(got) == 5 and mine not in got and len(set(got)) == 5
    everyone = swarms.announce(HASH, pid(7), "10.0.0.7", 6007, left=1, numwant=200)
    assert len(everyone.peers4) == 29 * 6 and mine not in entries(everyone.peers4)


def test_ipv6_peers_go_in_peers6(swarms: Swarms) -> None:
    swarms.announce(HASH, pid(1), "2001:db8::1", 6881, left=0)
    peers = swarms.announce(HASH, pid(2), "10.0.0.2", 6882, left=1)
    assert peers.peers4 == b"" and peers.peers6 == compact_entry("2001:db8::1", 6881) and len(peers.peers6) == 18


def test_completed_counts_once_per_peer_and_a_leecher_that_finishes_counts(swarms: Swarms) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5, event=EVENT_STARTED)
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=0, event=EVENT_COMPLETED)
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=0, event=EVENT_COMPLETED)
    assert swarms.scrape(HASH) == (1, 1, 0)
    swarms.announce(HASH, pid(2), "10.0.0.2", 2, left=5)
    swarms.announce(HASH, pid(2), "10.0.0.2", 2, left=0, event=EVENT_STOPPED)  # aria2c --seed-time=0
    assert swarms.scrape(HASH) == (1, 2, 0)
    swarms.announce(HASH, pid(3), "10.0.0.3", 3, left=0)  # came as a seeder: downloaded elsewhere
    assert swarms.scrape(HASH) == (2, 2, 0)
    swarms.announce(HASH, pid(3), "10.0.0.3", 3, left=7)  # lost data: a leecher again
    assert swarms.scrape(HASH) == (1, 2, 1) and swarms.counts()["bittorrent_seeders"] == 1
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=0, event=EVENT_STOPPED)
    assert swarms.counts()["bittorrent_seeders"] == 0


def test_stopped_removes_the_peer_and_an_empty_swarm_goes(swarms: Swarms) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5)
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5, event=EVENT_STOPPED)
    assert swarms.scrape(HASH) == (0, 0, 0) and swarms.torrent_count == 0 and swarms.networks.counts == {}


def test_peers_expire_after_missed_announces(swarms: Swarms, clock: Clock) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5)
    clock.now += 2000
    swarms.announce(HASH, pid(2), "10.0.0.2", 2, left=5)
    assert swarms.expire() == 0
    clock.now += 701
    assert swarms.expire() == 1
    assert swarms.scrape(HASH) == (0, 0, 1)
    clock.now += 2000
    assert swarms.expire() == 1 and swarms.torrent_count == 0


def test_a_peer_id_is_bound_to_its_host_until_it_expires(swarms: Swarms, clock: Clock) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5)
    with pytest.raises(BtFailure, match="another address"):
        swarms.announce(HASH, pid(1), "10.6.6.6", 1, left=5, event=EVENT_STOPPED)
    assert swarms.scrape(HASH) == (0, 0, 1)
    clock.now += 2701
    swarms.announce(HASH, pid(1), "10.6.6.6", 9, left=5)
    assert swarms.announce(HASH, pid(2), "10.0.0.2", 2, left=5).peers4 == compact_entry("10.6.6.6", 9)


def test_a_new_port_replaces_the_old_entry(swarms: Swarms) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5)
    swarms.announce(HASH, pid(1), "10.0.0.1", 2, left=5)
    assert swarms.announce(HASH, pid(2), "10.0.0.2", 2, left=5).peers4 == compact_entry("10.0.0.1", 2)


def test_caps_per_network_and_per_torrent(clock: Clock) -> None:
    swarms = Swarms(2700.0, clock, max_peers_per_ip=3, max_peers_per_ip_per_swarm=2)
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=5)
    swarms.announce(HASH, pid(2), "10.0.0.1", 2, left=5)
    with pytest.raises(BtFailure, match="in this torrent"):
        swarms.announce(HASH, pid(3), "10.0.0.1", 3, left=5)
    swarms.announce(b"x" * 20, pid(3), "10.0.0.1", 3, left=5)
    with pytest.raises(BtFailure, match="most one address"):
        swarms.announce(b"y" * 20, pid(4), "10.0.0.1", 4, left=5)
    swarms.announce(b"y" * 20, pid(4), "10.0.0.2", 4, left=5)  # another address is not held back
    # an IPv6 /64 is one network
    swarms.announce(HASH, pid(5), "2001:db8::1", 5, left=5)
    swarms.announce(HASH, pid(6), "2001:db8::2", 6, left=5)
    with pytest.raises(BtFailure):
        swarms.announce(HASH, pid(7), "2001:db8::3", 7, left=5)


def test_port_zero_is_refused(swarms: Swarms) -> None:
    with pytest.raises(BtFailure, match="port 0"):
        swarms.announce(HASH, pid(1), "10.0.0.1", 0, left=5)


def test_listed_peers_carry_their_ids(swarms: Swarms) -> None:
    swarms.announce(HASH, pid(1), "10.0.0.1", 1, left=0)
    peers = swarms.announce(HASH, pid(2), "10.0.0.2", 2, left=5, listed=True)
    assert peers.listed == ((pid(1), "10.0.0.1", 1),)


def test_windows_are_fair_samples(swarms: Swarms) -> None:
    for i in range(20):
        swarms.announce(HASH, pid(i), "10.0.0.1", 1000 + i, left=1)
    seen: dict[bytes, int] = {}
    for _ in range(2000):
        for entry in entries(swarms.announce(HASH, pid(99), "10.0.0.2", 5, left=1, numwant=5).peers4):
            seen[entry] = seen.get(entry, 0) + 1
    assert len(seen) == 20 and min(seen.values()) > 300  # each ~500 times
