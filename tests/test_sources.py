"""peer/sources.py: which holders a download connects to (pure, no trio)."""

from __future__ import annotations

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
