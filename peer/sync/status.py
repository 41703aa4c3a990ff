"""The status file of a running sync, ``.chunkswarm/status.json``, read by ``chunkswarm sync status``."""

from __future__ import annotations

import heapq
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from common.messages import Holders, WhoHas
from common.sync_merge import Plan
from peer.sync.index import Index
from peer.tracker_client import TrackerClient

__all__ = ["STATUS_FILE", "holders_now", "status_encoder", "taken_line"]

STATUS_FILE = "status.json"
#: The latest changes the file lists.
_FILES = 1000


def status_encoder(collection: str, me: bytes, index: Index, refused: str, nodes: Mapping[bytes, float], online: set[bytes],
                   transfers: Iterable[Any]) -> Callable[[], bytes]:  # fmt: skip
    """The status now, to be encoded by the function returned (in a worker thread).

    What the event loop changes (the index, the nodes, the transfers) is copied
    here, on the loop: a thread iterating the live dicts meanwhile could fail
    ("dictionary changed size during iteration"). The copies are shallow
    (entries are frozen), the sorting and the JSON are left to the thread.
    """
    entries = list(index.entries.values())
    status: dict[str, Any] = {
        "collection": collection,
        "me": me.hex(),
        "pid": os.getpid(),
        "written": time.time(),
        "sequence": index.sequence,
        "refused": refused,
        "nodes": [{"id": node.hex(), "online": node in online, "last_seen": seen} for node, seen in nodes.items()],
        "transfers": [{"path": t.path, "size": t.size, "done": t.done} for t in transfers],
    }

    def encode() -> bytes:
        status["files_total"] = sum(1 for e in entries if not e.deleted)
        status["files"] = [
            {"path": e.path, "size": e.size, "deleted": e.deleted, "mtime_ns": e.mtime_ns, "by": e.modified_by.hex()}
            for e in heapq.nlargest(_FILES, entries, key=lambda e: e.mtime_ns)
        ]
        return json.dumps(status).encode()

    return encode


async def holders_now(tracker: TrackerClient, index: Index) -> set[bytes]:
    """The nodes (short ids) the tracker lists as holders of a few of the collection's files now: the ones online."""
    ids = list(itertools.islice((entry.file_id for entry in index.entries.values() if not entry.deleted), 8))  # not all 10,000
    found: set[bytes] = set()
    for reply in await tracker.request_many([WhoHas(file_id, max_peers=50) for file_id in ids]) if ids else ():
        if isinstance(reply, Holders):
            found.update(holder.peer_id[:8] for holder in reply.holders)
    return found


def taken_line(plan: Plan, seconds: float, left: int) -> str | None:
    """What the user is told of others' changes applied here (None if there were none): the receiving node said nothing."""
    deleted = sum(1 for entry in plan.take if entry.deleted) + len(plan.drop)
    written = len(plan.take) + len(plan.drop) - deleted
    if not written and not deleted:
        return None
    done = ", ".join(f"{count:,} {what}" for count, what in ((written, "written"), (deleted, "deleted")) if count)
    later = f"; {left:,} left for the next try" if left else ""
    return f"took {written + deleted:,} change{'' if written + deleted == 1 else 's'} from other nodes ({done}) in {seconds:.2f} s{later}"
