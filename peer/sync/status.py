"""The status file of a running sync, ``.chunkswarm/status.json``, read by ``chunkswarm sync status``."""

from __future__ import annotations

import heapq
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from peer.sync.index import Index

__all__ = ["STATUS_FILE", "status_encoder"]

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
