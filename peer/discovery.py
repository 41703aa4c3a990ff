"""Finding a tracker on the LAN by mDNS/DNS-SD (service ``_chunkswarm._tcp.local.``, advertised by ``tracker.mdns``).

:func:`browse` listens for a bounded time and returns every tracker that
answered, sorted by name, so the choice among several is the same on every
run; :func:`choose` picks one (the first open one when the node is not in a
private swarm) and says why. Blocking (zeroconf runs its own thread): call
it before trio starts, or through ``trio.to_thread``.
"""

from __future__ import annotations

import threading
import time
from typing import Final

import attrs
from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

__all__ = ["SERVICE_TYPE", "DISCOVERY_TIMEOUT", "FoundTracker", "browse", "choose"]

SERVICE_TYPE: Final = "_chunkswarm._tcp.local."  # as tracker.mdns advertises it
#: How long a peer started without a tracker address listens for one.
DISCOVERY_TIMEOUT: Final = 3.0
#: After the first answer, how long others get to answer too (several trackers on one LAN).
_SETTLE: Final = 0.5


@attrs.frozen
class FoundTracker:
    """A tracker that answered: its service name, where it listens, its node id and whether its swarm is private."""

    name: str
    host: str
    port: int
    node: str
    private: bool

    def describe(self) -> str:
        kind = "private swarm" if self.private else "open"
        return f"{self.name} at {self.host}:{self.port} (node {self.node[:7]}, {kind})"


def _text(properties: dict[bytes, bytes | None], key: bytes) -> str:
    value = properties.get(key)
    return value.decode("utf-8", "replace") if value else ""


def browse(timeout: float = DISCOVERY_TIMEOUT) -> list[FoundTracker]:
    """The trackers that answer within ``timeout`` seconds (a short while longer once one has), sorted by name."""
    deadline = time.monotonic() + timeout
    names: set[str] = set()
    seen = threading.Event()

    def changed(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            names.add(name)
            seen.set()

    zeroconf = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zeroconf, SERVICE_TYPE, handlers=[changed])
        try:
            if seen.wait(timeout):
                time.sleep(max(0.0, min(_SETTLE, deadline - time.monotonic())))
        finally:
            browser.cancel()
        found = []
        for name in sorted(names):
            info = zeroconf.get_service_info(SERVICE_TYPE, name, timeout=int(1000 * max(0.5, deadline - time.monotonic())))
            if info is None or info.port is None:
                continue
            addresses = info.parsed_addresses(IPVersion.V4Only)
            if not addresses:
                continue
            properties = info.properties
            found.append(FoundTracker(name.removesuffix("." + SERVICE_TYPE), addresses[0], info.port, _text(properties, b"node"),
                                      _text(properties, b"private") == "1"))  # fmt: skip
        return found
    finally:
        zeroconf.close()


def choose(found: list[FoundTracker], *, private: bool) -> FoundTracker | None:
    """The tracker to use: the first whose swarm is as private as this node's, else the first; None if none answered."""
    matching = [tracker for tracker in found if tracker.private == private] or found
    return matching[0] if matching else None
