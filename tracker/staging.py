"""Group commit: the PUBLISHes of one pipelined batch reach the disk in one transaction, before any of their replies is sent.

A client that publishes a folder pipelines thousands of PUBLISH (and
ANNOUNCE) requests. Committed one by one, each costs a transaction and a trip
through a worker thread (~1.5 ms): 10,000 small files took 20 s. Instead the
``publish`` handler (``tracker.handlers``) lists a small manifest at once, in
memory, and *stages* its save on the connection (:func:`stage`); the
connection answers the rest of what it has read, and before it sends any reply
of the batch it commits every staged save in one transaction
(:func:`commit`, ``Store.save_many``). So a PUBLISH acknowledged is on disk,
as before: a tracker killed after the reply loses nothing.

If the commit fails, every staged PUBLISH is undone (unlisted if it had
listed the file, its publisher's share given back) and its reply, not sent
yet, becomes ERROR INTERNAL, as a failed single save was answered before.
What other connections may see meanwhile is a file listed a few milliseconds
before it is on disk; a crash in that window loses a publish nobody was told
had succeeded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import attrs
import trio

from common.codec import encode_message
from common.errors import StorageError
from common.framing import ErrorCode
from common.manifest import Manifest
from common.messages import Error

if TYPE_CHECKING:
    from tracker.connection import Connection

__all__ = ["Staged", "stage", "commit"]

log = logging.getLogger(__name__)

_FAILED: Final = encode_message(Error(ErrorCode.INTERNAL, "the tracker could not store the manifest"))


@attrs.frozen
class Staged:
    """A PUBLISH answered but not on disk yet."""

    manifest: Manifest
    publisher: bytes
    #: Whether this PUBLISH listed the file (it is unlisted again if the commit fails).
    listed: bool
    #: Where its reply is in the connection's ``pending`` replies.
    reply: int


def stage(connection: Connection, manifest: Manifest, publisher: bytes, *, listed: bool) -> None:
    """Save ``manifest`` with the connection's batch; call just before its reply is queued (it is the next one)."""
    connection.unsaved.append(Staged(manifest, publisher, listed, len(connection.pending)))


async def commit(connection: Connection) -> None:
    """Commit the connection's staged saves in one transaction (a worker thread); on failure undo them and refuse their PUBLISHes."""
    staged, connection.unsaved = connection.unsaved, []
    if not staged:
        return
    service = connection.service
    try:
        await trio.to_thread.run_sync(service.store.save_many, [(s.manifest, s.publisher) for s in staged])
    except StorageError as exc:
        log.error("cannot store %d manifests: %s", len(staged), exc)
        for each in reversed(staged):
            service.publishers.remove(each.manifest, each.publisher)
            if each.listed:
                service.registry.unlist(each.manifest.file_id)
            connection.replace(each.reply, _FAILED)
