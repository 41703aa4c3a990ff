"""What the web UI and the JSON API show, read from the live registry: searches, files, holders, peers, counters.

Every function returns plain JSON-ready dicts, so a page and its API
endpoint say the same thing; the pages render them with Jinja2 and the API
sends them as they are. Nothing is copied out of the registry beyond the
page being answered.

Costs, on the tracker's event loop: a search runs over the folded names
at C speed (``tracker/web/names.py``: ~1 ms per 100,000 names for a rare
match, a few for a common one), yielding to the protocol's connections
between slices; at most :data:`CONCURRENT_SCANS` searches run at once, so
many HTTP clients cannot take more of the loop than a few. A file's availability picture costs one ``bit_count`` per incomplete
holder and cell, and yields every :data:`PICTURE_SLICE` holders.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import trio

from common.address import format_address
from common.lookup_messages import is_id_prefix
from tracker.records import FileRecord, Peer, Replica
from tracker.registry import Registry
from tracker.web.names import NameSearch

__all__ = [
    "MAX_QUERY", "MAX_PAGE", "DEFAULT_PAGE", "MAX_OFFSET", "HOLDERS_PER_RESULT", "MAX_HOLDERS_SHOWN", "MAX_CELLS",
    "Clock", "search", "file_json", "holder_json", "peer_json", "availability", "get_command",
]  # fmt: skip

#: The longest search text, in characters (a file name is at most 255 bytes).
MAX_QUERY: Final = 256
#: Results per page: at most, and when not asked.
MAX_PAGE: Final = 100
DEFAULT_PAGE: Final = 20
#: The furthest a page may start: beyond a million results nobody pages.
MAX_OFFSET: Final = 1_000_000
#: Holders listed with each search result (all of them on the file's page, paged).
HOLDERS_PER_RESULT: Final = 20
#: Holders listed on one page of a file.
MAX_HOLDERS_SHOWN: Final = 200
#: Cells of an availability picture: one per chunk up to this many chunks, else one per range.
MAX_CELLS: Final = 256
#: Holders summed into a picture between two yields.
PICTURE_SLICE: Final = 200
#: Searches scanning the catalogue at once (the others wait their turn).
CONCURRENT_SCANS: Final = 2
#: Ids a hex query matches by prefix, at most (a one-digit prefix covers 1/16 of the catalogue).
MAX_ID_MATCHES: Final = 100_000


class Clock:
    """The registry's clock (``trio.current_time``) and the wall clock, read once per answer, to date heartbeats."""

    def __init__(self, monotonic: Callable[[], float], wall: Callable[[], float] = time.time) -> None:
        self.now = monotonic()
        self.wall = wall()

    def wall_of(self, moment: float) -> float:
        return self.wall - (self.now - moment)


async def search(
    registry: Registry, names: NameSearch, query: str, offset: int, limit: int, limiter: trio.CapacityLimiter
) -> tuple[list[FileRecord], int]:
    """The files whose name contains ``query`` (case-insensitive) or whose id starts with it, newest first.

    Returns the ``limit`` matches from ``offset`` on and how many files match in all.
    """
    async with limiter:
        await names.refresh(registry.index)
        by_id: list[FileRecord] = []
        if is_id_prefix(query):
            by_id, _ = registry.index.find(query, MAX_ID_MATCHES)
        records, positions = await names.find(query, by_id)
        return [records[i] for i in positions[offset : offset + limit]], len(positions)


def get_command(file_id: str, tracker: str, private: bool) -> str:
    """The command that downloads the file, as a user types it."""
    swarm = " --swarm SWARM_FILE" if private else ""
    return f"chunkswarm get --tracker {tracker}{swarm} {file_id}"


def peer_json(peer: Peer, clock: Clock, timeout: float) -> dict[str, Any]:
    silent = max(0.0, clock.now - peer.last_seen)
    return {
        "peer_id": peer.peer_id.hex(),
        "name": peer.name,
        "identified": peer.node is not None,
        "address": format_address(peer.host, peer.port),
        "last_heartbeat": round(clock.wall_of(peer.last_seen), 3),
        "seconds_since_heartbeat": round(silent, 1),
        "online": silent <= timeout,
        "files": len(peer.slots),
        "http_port": peer.http_port,
    }


def holder_json(replica: Replica, clock: Clock, timeout: float) -> dict[str, Any]:
    peer = replica.peer
    held = len(replica.chunks)
    download = None
    if peer.http_port is not None:  # its HTTP gateway (``seed --http``)
        download = f"http://{format_address(peer.host, peer.http_port)}/files/{replica.file.manifest.hex_id}"
    return {
        **peer_json(peer, clock, timeout),
        "chunks_held": held,
        "complete": replica.complete,
        "download_url": download,
    }


def file_json(record: FileRecord, clock: Clock, timeout: float, holders: int, tracker: str, private: bool) -> dict[str, Any]:
    """One file: its manifest summary, its counts, and up to ``holders`` of its holders, complete copies first."""
    manifest = record.manifest
    replicas = record.replicas  # views: O(holders), as the sort of the first ``holders`` below
    # Beyond ``holders``, the first slots are a random choice: the list is a random permutation (Registry._link).
    shown = replicas[:holders] if len(replicas) > holders else list(replicas)
    shown.sort(key=lambda replica: (not replica.complete, replica.peer.host, replica.peer.port))
    return {
        "id": manifest.hex_id,
        "name": manifest.name,
        "size": manifest.size,
        "chunk_size": manifest.chunk_size,
        "chunks": manifest.chunk_count,
        "holders": len(replicas),
        "complete_copies": record.complete_copies,
        "get_command": get_command(manifest.hex_id, tracker, private),
        "peers": [holder_json(replica, clock, timeout) for replica in shown],
    }


async def availability(record: FileRecord) -> list[dict[str, Any]]:
    """The file's chunks in at most :data:`MAX_CELLS` cells: each cell's chunks and its mean count of holders per chunk."""
    count = record.manifest.chunk_count
    if count == 0:
        return []
    # One chunk a cell, or ranges of a whole number of bytes of the mask (counted a slice at a time).
    width = 1 if count <= MAX_CELLS else (-(-count // MAX_CELLS) + 7) // 8 * 8
    cells = -(-count // width)
    sums = [0] * cells
    byte_width = width // 8
    partial = [replica for replica in record.replicas if not replica.complete]
    complete = len(record.replicas) - len(partial)
    for done, replica in enumerate(partial, 1):
        mask = replica.mask
        if width == 1:
            for cell in range(cells):
                sums[cell] += mask >> cell & 1
        else:
            data = mask.to_bytes(cells * byte_width, "little")
            for cell in range(cells):
                sums[cell] += int.from_bytes(data[cell * byte_width : (cell + 1) * byte_width], "little").bit_count()
        if done % PICTURE_SLICE == 0:
            await trio.lowlevel.checkpoint()
    picture = []
    for cell in range(cells):
        first = cell * width
        last = min(count, first + width) - 1
        picture.append({"first": first, "last": last, "holders": round(complete + sums[cell] / (last - first + 1), 2)})
    return picture
