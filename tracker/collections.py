"""The tracker's collections (capability ``collections``, PROTOCOL.md §8.11): current versions, their history, watchers.

:class:`CollectionBook` holds each collection's current version in memory
(with its COLLECTION reply encoded once) and its recent versions in a table of
the tracker's SQLite database, so collections survive restarts and a client can
fetch the versions between one it kept and the current one. Older versions are
pruned as new ones are stored (:class:`History`: the last 100, and all of the
last 15 minutes, by default): a client asking for one gets ``ERROR VERSION_PRUNED``
naming the oldest version kept (PROTOCOL.md §8.11). A publish is a
compare-and-swap: under one lock, :func:`common.collection.check_successor`
against the current version, the commit (in a worker thread), then the
switch, which wakes every watcher of that collection.

The handlers run in the connection's task (they wait for the disk, a watch
for a change), never on the hub's fast path.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from common.codec import encode_message
from common.collection import CollectionVersion, check_successor, decode_version, encode_version
from common.collection_messages import MAX_WATCH, CollectionReply, GetCollection, PublishCollection, WatchCollection
from common.errors import CollectionRefused, NotAnOwner, StorageError, TrackerError
from common.framing import ErrorCode
from common.identity import node_id, short_id
from common.messages import Error, Ok

if TYPE_CHECKING:
    from tracker.connection import Connection

__all__ = ["CollectionBook", "CollectionStore", "History", "publish_collection", "get_collection", "watch_collection", "HANDLERS"]

log = logging.getLogger(__name__)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS collection_versions (
    name      TEXT NOT NULL,
    sequence  INTEGER NOT NULL,
    data      BLOB NOT NULL,          -- common.collection.encode_version
    stored    REAL,                   -- when the tracker stored it (Unix time), for pruning
    PRIMARY KEY (name, sequence)
)
"""
_OK_FRAME: Final = encode_message(Ok())


@attrs.frozen
class History:
    """How many versions of each collection the tracker keeps: the last ``versions``, and every one stored in the last ``seconds``.

    What is kept is always a run of versions up to the current one (older ones go
    first), so a peer walks from the oldest kept one. Pruning happens as a version
    is stored, in its transaction: a collection holds at most ``versions`` rows plus
    those stored within ``seconds`` before its latest publish.

    The defaults: a peer that missed up to 100 versions, or was away 15 minutes during a burst
    of more, checks every step; one away longer walks on from the oldest kept by its signer
    (``peer.collections.fetch_following``). A version lists every entry (about 1 MB for 10,000
    files), so 100 bound a collection's history at about 100 MB, plus a quarter hour's versions.
    """

    versions: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    seconds: float = attrs.field(default=900.0, validator=attrs.validators.ge(0))
    #: Wall-clock seconds (a stored time must mean the same after a restart); tests inject their own.
    clock: Callable[[], float] = time.time


class CollectionStore:
    """The collection versions kept (:class:`History`), in the tracker's database (its own connection; blocking: call through a thread)."""

    def __init__(self, path: str | os.PathLike[str] | None, history: History | None = None) -> None:
        self._lock = threading.Lock()
        self.history = History() if history is None else history
        try:
            self._db = sqlite3.connect(":memory:" if path is None else os.fspath(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=10000")  # the catalogue's own connection writes the same file
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            if "stored" not in {row[1] for row in self._db.execute("PRAGMA table_info(collection_versions)")}:
                # A table from before pruning: its versions count as stored now, so they go one retention from now.
                self._db.execute("ALTER TABLE collection_versions ADD COLUMN stored REAL")
                self._db.execute("UPDATE collection_versions SET stored = ?", (self.history.clock(),))
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the collections table in {path}: {exc}") from None

    def save(self, version: CollectionVersion) -> None:
        """Store ``version``, and prune the versions of its collection :attr:`history` does not keep: one transaction."""
        data = encode_version(version)
        history = self.history
        now = history.clock()
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    self._db.execute("INSERT OR REPLACE INTO collection_versions VALUES (?, ?, ?, ?)",
                                     (version.name, version.sequence, data, now))  # fmt: skip
                    # Below the last ``versions``, and below the first version stored within ``seconds``: the rest is a run.
                    self._db.execute(
                        "DELETE FROM collection_versions WHERE name = ? AND sequence <= ? AND sequence < "
                        "(SELECT MIN(sequence) FROM collection_versions WHERE name = ? AND stored >= ?)",
                        (version.name, version.sequence - history.versions, version.name, now - history.seconds),
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot store collection {version.name!r}: {exc}") from None

    def oldest(self, name: str) -> int:
        """The sequence of the oldest version of ``name`` kept (0: none)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(sequence) FROM collection_versions WHERE name = ?", (name,)).fetchone()
        return int(row[0] or 0)

    def count(self, name: str) -> int:
        """How many versions of ``name`` are kept."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM collection_versions WHERE name = ?", (name,)).fetchone()[0])

    def load_current(self) -> list[CollectionVersion]:
        """The newest version of every collection."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM collection_versions AS v WHERE sequence = "
                "(SELECT MAX(sequence) FROM collection_versions WHERE name = v.name)"
            ).fetchall()
        return [decode_version(row[0]) for row in rows]

    def load(self, name: str, sequence: int) -> CollectionVersion | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM collection_versions WHERE name = ? AND sequence = ?", (name, sequence)).fetchone()
        return None if row is None else decode_version(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


@attrs.define(eq=False)
class _Current:
    version: CollectionVersion
    reply: bytes  # the COLLECTION frame, encoded once per version


@attrs.define(eq=False)
class CollectionBook:
    """Each collection's current version, the store behind them, and an event per collection that a change sets."""

    store: CollectionStore
    _current: dict[str, _Current] = attrs.field(factory=dict)
    _changed: dict[str, trio.Event] = attrs.field(factory=dict)
    _lock: trio.Lock = attrs.field(factory=trio.Lock)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None, history: History | None = None) -> CollectionBook:
        """Blocking: the store at ``path`` (None: in memory), keeping ``history``, and the current versions it holds."""
        book = cls(CollectionStore(path, history))
        for version in book.store.load_current():
            book._current[version.name] = _Current(version, encode_message(CollectionReply(version)))
        return book

    def __len__(self) -> int:
        return len(self._current)

    def current(self, name: str) -> CollectionVersion | None:
        entry = self._current.get(name)
        return None if entry is None else entry.version

    def reply(self, name: str) -> bytes | None:
        entry = self._current.get(name)
        return None if entry is None else entry.reply

    def changed(self, name: str) -> trio.Event:
        """An event set at the next change of ``name``."""
        event = self._changed.get(name)
        if event is None:
            event = self._changed[name] = trio.Event()
        return event

    async def publish(self, version: CollectionVersion, listed: Callable[[bytes], bool]) -> None:
        """Make ``version`` current if it follows the current one; raises TrackerError (COLLECTION_CONFLICT, NOT_AN_OWNER ...)."""
        async with self._lock:  # check, commit and switch as one step: a compare-and-swap on the parent
            previous = self.current(version.name)
            try:
                check_successor(previous, version)
            except NotAnOwner as exc:
                raise TrackerError(str(exc), code=ErrorCode.NOT_AN_OWNER) from None
            except CollectionRefused as exc:
                if previous is None:
                    raise TrackerError(str(exc), code=ErrorCode.BAD_REQUEST) from None
                raise TrackerError(
                    f"collection {version.name!r} is at version {previous.sequence}: {exc}", code=ErrorCode.COLLECTION_CONFLICT,
                    sequence=previous.sequence,
                ) from None
            for entry in version.entries:
                if not entry.deleted and not listed(entry.file_id):
                    raise TrackerError(f"{entry.path!r}: file {entry.file_id.hex()[:16]} is not listed: publish it first",
                                       code=ErrorCode.UNKNOWN_FILE)  # fmt: skip

            def commit() -> bytes:
                self.store.save(version)
                return encode_message(CollectionReply(version))

            reply = await trio.to_thread.run_sync(commit)
            self._current[version.name] = _Current(version, reply)
            event = self._changed.pop(version.name, None)
            if event is not None:
                event.set()

    def close(self) -> None:
        self.store.close()


# -- handlers, in the connection's task ----------------------------------------------
async def publish_collection(connection: Connection, request: PublishCollection) -> bytes:
    service = connection.service
    version = request.version
    try:
        await service.collections.publish(version, service.registry.has_file)
    except StorageError as exc:
        log.error("cannot store collection %r: %s", version.name, exc)
        return encode_message(Error(ErrorCode.INTERNAL, "the tracker could not store the collection"))
    log.info("collection %r version %d published by %s (%d entries, root %s)",
             version.name, version.sequence, short_id(node_id(version.signer)), len(version.entries), version.root.hex()[:16])  # fmt: skip
    return _OK_FRAME


async def get_collection(connection: Connection, request: GetCollection) -> bytes:
    book = connection.service.collections
    current = book.current(request.name)
    if current is None:
        raise TrackerError(f"no collection named {request.name!r}", code=ErrorCode.UNKNOWN_COLLECTION)
    if request.sequence in (0, current.sequence):
        reply = book.reply(request.name)
        assert reply is not None
        return reply
    if request.sequence > current.sequence:
        raise TrackerError(f"collection {request.name!r} is at version {current.sequence}", code=ErrorCode.UNKNOWN_COLLECTION)

    def load() -> tuple[CollectionVersion | None, int]:
        older = book.store.load(request.name, request.sequence)
        return older, (book.store.oldest(request.name) if older is None else 0)

    try:
        older, oldest = await trio.to_thread.run_sync(load)
    except StorageError as exc:
        log.error("cannot read collection %r: %s", request.name, exc)
        return encode_message(Error(ErrorCode.INTERNAL, "the tracker could not read the collection"))
    if older is None and 0 < request.sequence < oldest:
        # PROTOCOL.md §8.11: the message names the oldest version kept, where a client walks on from.
        raise TrackerError(f"collection {request.name!r} keeps versions from {oldest} on: version {request.sequence} was pruned",
                           code=ErrorCode.VERSION_PRUNED, sequence=oldest)  # fmt: skip
    if older is None:
        raise TrackerError(f"collection {request.name!r} has no version {request.sequence}", code=ErrorCode.UNKNOWN_COLLECTION)
    return encode_message(CollectionReply(older))


async def watch_collection(connection: Connection, request: WatchCollection) -> bytes:
    """COLLECTION once the root differs from ``known_root``; an empty one after the wait (at most MAX_WATCH, and half the idle timeout)."""
    book = connection.service.collections
    wait = min(request.wait, MAX_WATCH, connection.service.config.idle_timeout / 2)
    with trio.move_on_after(wait):
        while True:
            changed = book.changed(request.name)  # taken before looking: no change slips between
            current = book.current(request.name)
            if current is not None and current.root != request.known_root:
                reply = book.reply(request.name)
                assert reply is not None
                return reply
            await changed.wait()
    return encode_message(CollectionReply(None))


#: What a connection that agreed on ``collections`` adds to its ``task`` table (``tracker.handlers.after_hello``).
HANDLERS: Final[Mapping[type, Callable[[Connection, Any], Awaitable[bytes]]]] = {
    PublishCollection: publish_collection, GetCollection: get_collection, WatchCollection: watch_collection,
}
