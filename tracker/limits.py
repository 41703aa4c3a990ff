"""Per-address accounting: what one client's address may hold, and holders counted once per address.

Pure and synchronous, used by the registry (peers per network, holders per
address) and by the connection boundary (connections per network). A
"network" is what one client is assumed to control: an IPv4 address, or the
/64 of an IPv6 address (a host is usually given a whole /64, so counting its
single addresses would let it take as many as it likes).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from common.address import ip_group
from common.errors import TrackerError
from common.framing import ErrorCode
from tracker.records import Peer

__all__ = ["Tally", "AddressBook", "distinct_window"]


class Tally:
    """A count per key that forgets a key once it is back to zero (so it holds only the keys in use)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def get(self, key: str) -> int:
        return self.counts.get(key, 0)

    def add(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def remove(self, key: str) -> None:
        left = self.counts[key] - 1
        if left:
            self.counts[key] = left
        else:
            del self.counts[key]


class AddressBook:
    """The live peers per network, and per (host, port): how many addresses more than one peer id claims.

    While no address is claimed twice (``crowded`` is 0, the usual case) a
    window of holders is distinct as it is; otherwise :func:`distinct_window`
    deduplicates it. Each change is O(1).
    """

    __slots__ = ("networks", "_addresses", "crowded")

    def __init__(self) -> None:
        self.networks = Tally()
        self._addresses: dict[tuple[str, int], int] = {}
        self.crowded = 0

    def check_room(self, host: str, cap: int) -> None:
        """Refuse (``TrackerError(BUSY)``) one more peer id from ``host``'s network when it has ``cap`` (0: no cap)."""
        network = ip_group(host)
        if cap and self.networks.get(network) >= cap:
            raise TrackerError(f"{network} has {cap} peer ids registered already, the most one address may have", code=ErrorCode.BUSY)

    def join(self, host: str, port: int) -> None:
        self.networks.add(ip_group(host))
        self.claim(host, port)

    def leave(self, host: str, port: int) -> None:
        self.networks.remove(ip_group(host))
        self.release(host, port)

    def ids_at(self, address: tuple[str, int]) -> int:
        """How many live peer ids claim ``address`` (at least 1)."""
        return self._addresses.get(address, 1)

    def claim(self, host: str, port: int) -> None:
        address = (host, port)
        count = self._addresses.get(address, 0) + 1
        self._addresses[address] = count
        if count == 2:
            self.crowded += 1

    def release(self, host: str, port: int) -> None:
        address = (host, port)
        count = self._addresses[address] - 1
        if count:
            self._addresses[address] = count
        else:
            del self._addresses[address]
        if count == 1:
            self.crowded -= 1


def distinct_window(
    holders: Sequence[Peer], start: int, limit: int, mine: int, ids_at: Callable[[tuple[str, int]], int], rng: random.Random
) -> list[int]:
    """Up to ``limit`` slots of ``holders`` from ``start`` on (wrapping), one per (host, port), never ``mine``.

    Peer ids that point at one address are one holder to a downloader (a
    tarpit registering 300 ids at one port must not fill the answer), and one
    holder to the sample too: the first pass takes a slot with probability
    1 / (ids registered at its address), so an honest holder alone at its
    address is as likely to be named as a crowded address (taking each
    address at its first slot would favour the crowded ones, whose first
    slots come early). A second pass fills what the first left. Visits every
    slot at most twice; with at most ``c`` ids per address the first pass
    stops after about ``limit * c`` slots.
    """
    count = len(holders)
    seen: set[tuple[str, int]] = set()
    window: list[int] = []
    for fair in (True, False):
        for offset in range(count):
            slot = (start + offset) % count
            if slot == mine:
                continue
            peer = holders[slot]
            address = (peer.host, peer.port)
            if address in seen or (fair and rng.random() * ids_at(address) >= 1.0):
                continue
            seen.add(address)
            window.append(slot)
            if len(window) == limit:
                return window
    return window
