"""Counters and status snapshots of a peer (plain values, for the API, the UI and tests)."""

from __future__ import annotations

import attrs

from common.address import format_address
from common.identity import short_id

__all__ = ["TransferCount", "Transfers", "PeerStatus", "describe_remote"]


def describe_remote(label: str, address: tuple[str, int] | None, node: bytes | None = None) -> str:
    """``peer-1 (127.0.0.1:40123)``: how a remote peer is named in logs and counters; with its proven ``node`` id, ``peer-1 (127.0.0.1:40123, MFZWI3D)``."""
    where = format_address(*address) if address is not None else "?"
    if node is not None:
        where = f"{where}, {short_id(node)}"
    return f"{label} ({where})" if label else where


@attrs.define
class TransferCount:
    chunks: int = 0
    bytes: int = 0

    def add(self, nbytes: int) -> None:
        self.chunks += 1
        self.bytes += nbytes


@attrs.define
class Transfers:
    """Chunks and bytes moved per remote peer, in each direction."""

    uploaded: dict[str, TransferCount] = attrs.field(factory=dict)
    downloaded: dict[str, TransferCount] = attrs.field(factory=dict)

    def record_upload(self, remote: str, nbytes: int) -> None:
        self.uploaded.setdefault(remote, TransferCount()).add(nbytes)

    def record_download(self, remote: str, nbytes: int) -> None:
        self.downloaded.setdefault(remote, TransferCount()).add(nbytes)

    @property
    def bytes_uploaded(self) -> int:
        return sum(c.bytes for c in self.uploaded.values())


@attrs.frozen
class PeerStatus:
    """A snapshot of :meth:`peer.node.Peer.status`."""

    label: str
    peer_id: bytes
    connected: bool
    tracker: tuple[str, int]
    listen_address: tuple[str, int]
    #: (name, file id hex, chunks held, chunk count) per held file.
    files: tuple[tuple[str, str, int, int], ...]
    active_downloads: tuple[str, ...]
    upload_connections: int
    uploaded: dict[str, TransferCount]
    downloaded: dict[str, TransferCount]
