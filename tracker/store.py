"""The durable catalogue: published manifests in an embedded SQLite database.

Only the catalogue is stored. Peers and replicas are soft state that peers
rebuild by re-registering and re-announcing after a tracker restart.

A publish is committed (WAL, ``synchronous=FULL``: the commit waits for the
log to reach the disk) before the tracker acknowledges it, so a crash after
the reply loses nothing. Methods are blocking; the server calls
:meth:`Store.save` through ``trio.to_thread.run_sync`` because a durable commit
costs an fsync, milliseconds that must not stall every other connection.
Calls may come from any worker thread, one at a time (a lock serialises them).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator

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
    published   REAL NOT NULL DEFAULT (julianday('now'))
)
"""


class Store:
    """The ``files`` table of one SQLite database; ``path=None`` is an in-memory database."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else os.fspath(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path or ":memory:", check_same_thread=False, isolation_level=None)
            if self.path is not None:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the tracker database {self.path or ':memory:'}: {exc}") from None

    def save(self, manifest: Manifest) -> bool:
        """Store ``manifest`` durably; False if that file id was stored already. Blocking."""
        with self._lock:
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO files (name, size, chunk_size, file_id, hashes) VALUES (?, ?, ?, ?, ?)", manifest.record()
                )
            except sqlite3.Error as exc:
                raise StorageError(f"cannot store manifest {manifest.name!r}: {exc}") from None
        return cursor.rowcount == 1

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

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
