"""Who published each file, and how much each publisher has published: unpublish and quotas (PROTOCOL.md §8.7).

Pure state, like ``tracker.registry``. A **publisher** is the node id a
connection proved (capability identity), or, for a connection that did not
identify, its IP address (an IPv6 one by its /64, what one host is usually
given): :func:`publisher_of`. Only node ids may unpublish; both kinds count
against the quotas of ``TrackerConfig`` (files, and manifest bytes: what a
manifest costs the tracker's memory and database). Publishing a file one has
already published costs nothing; unpublishing it, or its leaving by retention,
gives its cost back.

Costs: every method is O(1) but :meth:`Publishers.forget`, O(the file's publishers).
"""

from __future__ import annotations

import ipaddress

import attrs

from common.errors import TrackerError
from common.framing import ErrorCode
from common.manifest import HASH_SIZE, Manifest
from common.wording import format_size, plural

__all__ = ["Publishers", "publisher_of", "manifest_cost", "NODE_PUBLISHER_SIZE"]

#: A node id; any other publisher key is an address's (b"ip " + its network).
NODE_PUBLISHER_SIZE = 32


def publisher_of(node: bytes | None, host: str) -> bytes:
    """The publisher a connection counts as: its proven node id, else its address (IPv6: the /64)."""
    if node is not None:
        return node
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return b"ip " + host.encode()
    if address.version == 6:
        return b"ip " + str(ipaddress.ip_network(f"{address}/64", strict=False)).encode()
    return b"ip " + str(address).encode()


def manifest_cost(manifest: Manifest) -> int:
    """The manifest bytes a file costs its publisher: its chunk hashes and its name."""
    return HASH_SIZE * manifest.chunk_count + len(manifest.name.encode())


@attrs.define(eq=False)
class Publishers:
    max_files: int
    max_bytes: int
    _by_file: dict[bytes, set[bytes]] = attrs.field(init=False, factory=dict)
    #: publisher -> [files, manifest bytes]
    _usage: dict[bytes, list[int]] = attrs.field(init=False, factory=dict)

    def of(self, file_id: bytes) -> frozenset[bytes]:
        return frozenset(self._by_file.get(file_id, ()))

    def has(self, file_id: bytes, publisher: bytes) -> bool:
        return publisher in self._by_file.get(file_id, ())

    def usage(self, publisher: bytes) -> tuple[int, int]:
        files, size = self._usage.get(publisher, (0, 0))
        return files, size

    def check(self, publisher: bytes, manifest: Manifest) -> None:
        """``TrackerError(QUOTA_EXCEEDED)`` if ``publisher`` may not publish ``manifest`` as well."""
        if self.has(manifest.file_id, publisher):
            return
        files, size = self.usage(publisher)
        if files + 1 > self.max_files:
            raise TrackerError(f"quota exceeded: this publisher has published {plural(files, 'file')}, the most this tracker takes",
                               code=ErrorCode.QUOTA_EXCEEDED)  # fmt: skip
        cost = manifest_cost(manifest)
        if size + cost > self.max_bytes:
            raise TrackerError(
                f"quota exceeded: {format_size(size)} of manifests published, {format_size(cost)} more would pass this "
                f"tracker's {format_size(self.max_bytes)} per publisher",
                code=ErrorCode.QUOTA_EXCEEDED,
            )

    def add(self, manifest: Manifest, publisher: bytes) -> bool:
        """Record ``publisher`` as publishing ``manifest``; False if it already was (then it costs nothing)."""
        publishers = self._by_file.setdefault(manifest.file_id, set())
        if publisher in publishers:
            return False
        publishers.add(publisher)
        usage = self._usage.setdefault(publisher, [0, 0])
        usage[0] += 1
        usage[1] += manifest_cost(manifest)
        return True

    def remove(self, manifest: Manifest, publisher: bytes) -> bool:
        """``publisher`` no longer publishes ``manifest``; True when nobody does any more."""
        publishers = self._by_file.get(manifest.file_id, set())
        if publisher in publishers:
            publishers.discard(publisher)
            self._refund(publisher, manifest)
        if not publishers:
            self._by_file.pop(manifest.file_id, None)
            return True
        return False

    def forget(self, manifest: Manifest) -> None:
        """The file left the catalogue (retention): every publisher gets its cost back."""
        for publisher in self._by_file.pop(manifest.file_id, ()):
            self._refund(publisher, manifest)

    def _refund(self, publisher: bytes, manifest: Manifest) -> None:
        usage = self._usage[publisher]
        usage[0] -= 1
        usage[1] -= manifest_cost(manifest)
        if not usage[0]:
            del self._usage[publisher]
