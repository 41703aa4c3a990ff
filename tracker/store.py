"""The durable catalogue: published manifests in an embedded SQLite database.

Only the catalogue is stored. Peers and replicas are soft state that peers
rebuild by re-registering and re-announcing after a tracker restart. Beside
each manifest the store keeps when a peer last held the file (``last_held``,
wall-clock seconds, as it must outlive restarts), which decides how long a
file nobody holds stays listed (``tracker/retention.py``).

A publish is committed (WAL, ``synchronous=FULL``: the commit waits for the
log to reach the disk) before the tracker acknowledges it, so a crash after
the reply loses nothing. Methods are blocking; the server calls
:meth:`Store.save` through ``trio.to_thread.run_sync`` because a durable commit
costs an fsync, milliseconds that must not stall every other connection.
Calls may come from any worker thread, one at a time (a lock serialises them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from common.errors import StorageError, ValidationError
from common.manifest import Manifest

__all__ = ["Store"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- publish order, for newest-first listings
    file_id     BLOB NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    chunk_size  INTEGER NOT NULL,
    hashes      BLOB NOT NULL,                      -- the chunk hashes, concatenated
    published   REAL NOT NULL DEFAULT (julianday('now')),
    last_held   REAL                                -- Unix time a peer last held it (or it was published)
)
"""
#: Who published each file (PROTOCOL.md §8.7): a node id, or b"ip " and an address. A database from before
#: gets the table empty: its files have no recorded publisher and leave by retention only.
_PUBLISHERS = """
CREATE TABLE IF NOT EXISTS publishers (
    file_id     BLOB NOT NULL,
    publisher   BLOB NOT NULL,
    PRIMARY KEY (file_id, publisher)
)
"""
#: Databases written before last_held existed: the column added, the publish time standing in for it.
_MIGRATIONS = (
    "ALTER TABLE files ADD COLUMN last_held REAL",
    "UPDATE files SET last_held = (published - 2440587.5) * 86400.0 WHERE last_held IS NULL",
)


class Store:
    """The ``files`` table of one SQLite database; ``path=None`` is an in-memory database."""

    def __init__(self, path: str | os.PathLike[str] | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = None if path is None else os.fspath(path)
        #: Wall-clock seconds (``last_held`` must mean the same after a restart); tests inject their own.
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path or ":memory:", check_same_thread=False, isolation_level=None)
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            self._db.execute(_PUBLISHERS)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
            if "last_held" not in columns:
                with self._transaction():
                    for statement in _MIGRATIONS:
                        self._db.execute(statement)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the tracker database {self.path or ':memory:'}: {exc}") from None

    def save(self, manifest: Manifest, publisher: bytes | None = None) -> None:
        """Store ``manifest`` durably (held as of now: stored again, only that moves on), and ``publisher`` as one of its publishers. Blocking."""
        self.save_many([(manifest, publisher)])

    def save_many(self, manifests: Sequence[tuple[Manifest, bytes | None]]) -> None:
        """:meth:`save` each (manifest, publisher) in one transaction: one commit (one fsync) for a whole pipelined batch. Blocking."""
        now = self.clock()
        with self._lock:
            try:
                with self._transaction():
                    for manifest, publisher in manifests:
                        self._db.execute(
                            "INSERT INTO files (name, size, chunk_size, file_id, hashes, last_held) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (file_id) DO UPDATE SET last_held = excluded.last_held",
                            (*manifest.record(), now),
                        )
                        if publisher is not None:
                            self._db.execute("INSERT OR IGNORE INTO publishers VALUES (?, ?)", (manifest.file_id, publisher))
            except sqlite3.Error as exc:
                what = f"manifest {manifests[0][0].name!r}" if len(manifests) == 1 else f"{len(manifests)} manifests"
                raise StorageError(f"cannot store {what}: {exc}") from None

    def touch(self, file_ids: Iterable[bytes]) -> None:
        """Record that peers hold ``file_ids`` now. Blocking."""
        now = self.clock()
        with self._lock:
            try:
                with self._transaction():  # one fsync, however many files
                    self._db.executemany("UPDATE files SET last_held = ? WHERE file_id = ?", ((now, file_id) for file_id in file_ids))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot update the tracker database {self.path}: {exc}") from None

    def unheld_since(self, before: float) -> list[bytes]:
        """The files no peer has held since ``before`` (wall-clock seconds). Blocking."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT file_id FROM files WHERE last_held < ? ORDER BY seq", (before,)).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the tracker database {self.path}: {exc}") from None
        return [row[0] for row in rows]

    def delete(self, file_ids: Iterable[bytes], *, unheld_since: float) -> None:
        """Forget ``file_ids``, those still unheld since ``unheld_since`` (one published again meanwhile stays). Blocking."""
        with self._lock:
            try:
                with self._transaction():
                    self._db.executemany("DELETE FROM files WHERE file_id = ? AND last_held < ?",
                                         ((file_id, unheld_since) for file_id in file_ids))  # fmt: skip
                    self._db.execute("DELETE FROM publishers WHERE file_id NOT IN (SELECT file_id FROM files)")
            except sqlite3.Error as exc:
                raise StorageError(f"cannot update the tracker database {self.path}: {exc}") from None

    def unpublish(self, file_id: bytes, publisher: bytes, *, drop: bool) -> None:
        """``publisher`` no longer publishes ``file_id``; with ``drop`` (it was the last) the file goes too. Blocking."""
        with self._lock:
            try:
                with self._transaction():
                    self._db.execute("DELETE FROM publishers WHERE file_id = ? AND publisher = ?", (file_id, publisher))
                    if drop:
                        self._db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
                        self._db.execute("DELETE FROM publishers WHERE file_id = ?", (file_id,))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot update the tracker database {self.path}: {exc}") from None

    def publishers(self) -> list[tuple[bytes, bytes]]:
        """Every (file id, publisher) of a stored file. Blocking."""
        with self._lock:
            try:
                return self._db.execute("SELECT p.file_id, p.publisher FROM publishers p JOIN files USING (file_id)").fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the tracker database {self.path}: {exc}") from None

    def load(self) -> Iterator[Manifest]:
        """Every stored manifest, oldest first. Rows that no longer make a valid manifest are logged and skipped."""
        with self._lock:
            try:
                rows = self._db.execute("SELECT name, size, chunk_size, file_id, hashes FROM files ORDER BY seq").fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"cannot read the tracker database {self.path}: {exc}") from None
        for row in rows:
            try:
                yield Manifest.from_record(row)
            except (ValidationError, TypeError) as exc:
                log.warning("skipping a damaged catalogue row %r: %s", row[0], exc)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # The connection is in autocommit mode (one durable commit per publish); several
        # statements that belong together are one transaction, and one fsync.
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
