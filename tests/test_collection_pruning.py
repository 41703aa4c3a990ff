"""Collection versions pruned on the tracker (``tracker.collections.History``), and how a peer behind the pruned range follows.

The store with an injected clock (rows counted); then a real tracker over
127.0.0.1 answering ERROR VERSION_PRUNED, and ``fetch_following`` walking on from
the oldest version kept: from one signed by an owner it trusts, never from a
forged one.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import sqlite3

import pytest
import trio

from common.capabilities import COLLECTIONS
from common.collection import CollectionVersion, Entry, encode_version, sign_version
from common.collection_messages import GetCollection
from common.errors import ConnectionClosed, NotAnOwner
from common.framing import ErrorCode
from common.identity import NodeKey
from common.messages import Error, Hello
from peer.collections import fetch_following, publish_collection
from peer.tracker_client import TrackerLink
from tracker.collections import CollectionStore, History
from tracker.config import TrackerConfig
from tracker.service import serve_tracker

ZERO = bytes(32)
ALICE, BOB, MALLORY = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()


def chain(name: str, count: int, signers: dict[int, NodeKey] | None = None, owners: dict[int, list[NodeKey]] | None = None,
          start: CollectionVersion | None = None) -> list[CollectionVersion]:  # fmt: skip
    """``count`` versions after ``start``, each a tombstone more (distinct roots); signed by ALICE unless ``signers`` says."""
    versions = []
    previous = start
    for _ in range(count):
        sequence = 1 if previous is None else previous.sequence + 1
        signer = (signers or {}).get(sequence, ALICE)
        keys = (owners or {}).get(sequence) or (list(previous.owners) if previous else [ALICE.public_key])
        listed = [k if isinstance(k, bytes) else k.public_key for k in keys]
        entries = [Entry(f"gone-{i}.txt", 0, ZERO, 0o644, i, deleted=True) for i in range(1, sequence + 1)]
        previous = sign_version(signer, name, sequence, ZERO if previous is None else previous.root, entries, listed)
        versions.append(previous)
    return versions


def rows(store: CollectionStore, name: str) -> list[int]:
    with store._lock:
        return [r[0] for r in store._db.execute("SELECT sequence FROM collection_versions WHERE name = ? ORDER BY sequence", (name,))]


# -- the store ------------------------------------------------------------------------
def test_the_store_keeps_the_last_versions_and_the_recent_ones() -> None:
    now = [1000.0]
    store = CollectionStore(None, History(versions=5, seconds=60, clock=lambda: now[0]))
    for version in chain("a", 50):
        store.save(version)
        now[0] += 10
    # The last 5, and those stored within 60 s of the latest (at 10 s apart: 7 of them): 44-50.
    assert rows(store, "a") == list(range(44, 51)) and store.oldest("a") == 44 and store.count("a") == 7
    # A burst 10 s later (no time passes within it): all kept while recent (44 is 70 s old now), then pruned
    # to the last 5 at the next publish an hour on.
    burst = chain("a", 30, start=store.load("a", 50))
    for version in burst[:-1]:
        store.save(version)
    assert rows(store, "a") == list(range(45, 80))
    now[0] += 3600
    store.save(burst[-1])
    assert rows(store, "a") == list(range(76, 81))
    # Another collection is pruned on its own.
    store.save(chain("b", 1)[0])
    assert store.count("b") == 1 and store.count("a") == 5


def test_a_table_from_before_pruning_is_migrated(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as raw:
        raw.execute("CREATE TABLE collection_versions (name TEXT NOT NULL, sequence INTEGER NOT NULL, data BLOB NOT NULL, "
                    "PRIMARY KEY (name, sequence))")  # fmt: skip
        for version in chain("old", 10):
            raw.execute("INSERT INTO collection_versions VALUES (?, ?, ?)", (version.name, version.sequence, encode_version(version)))
    now = [5000.0]
    store = CollectionStore(db, History(versions=2, seconds=100, clock=lambda: now[0]))
    assert store.count("old") == 10 and store.load_current()[0].sequence == 10  # stored "now": one retention from now
    now[0] += 101
    store.save(chain("old", 1, start=store.load("old", 10))[0])
    assert rows(store, "old") == [10, 11]
    store.close()


# -- on the wire, and the peer's walk ----------------------------------------------------
async def _link(nursery: trio.Nursery, tracker: tuple[str, int], key: NodeKey | None) -> TrackerLink:
    hello = Hello((key or NodeKey.generate()).peer_id, 0, capabilities={COLLECTIONS: 1})
    link = await TrackerLink.open(tracker, hello, timeout=10, register_port=None, key=key)

    async def run() -> None:
        with contextlib.suppress(ConnectionClosed):
            await link.run()

    nursery.start_soon(run)
    return link


async def _tracker(nursery: trio.Nursery, db: pathlib.Path) -> tuple[str, int]:
    config = TrackerConfig(port=0, db_path=str(db), collection_versions=3, collection_history=0)
    running = await nursery.start(serve_tracker, config)
    return running.host, running.port


async def _publish(db: pathlib.Path, versions: list[CollectionVersion]) -> None:
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, await _tracker(nursery, db), ALICE)
        for version in versions:
            await publish_collection(link, version)
        nursery.cancel_scope.cancel()


def _write_behind(db: pathlib.Path, versions: list[CollectionVersion]) -> None:
    """Versions written into the tracker's database behind its back (a tracker that lies)."""
    with sqlite3.connect(db) as raw:
        for version in versions:
            raw.execute("INSERT OR REPLACE INTO collection_versions (name, sequence, data, stored) VALUES (?, ?, ?, 0)",
                        (version.name, version.sequence, encode_version(version)))  # fmt: skip


async def test_a_peer_behind_the_pruned_range_follows_from_a_trusted_version(tmp_path: pathlib.Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, "peer.collections")
    db = tmp_path / "t.db"
    # BOB becomes an owner at version 4 and signs 5-9; ALICE signs 10.
    versions = chain("p", 10, signers=dict.fromkeys(range(5, 10), BOB), owners={4: [ALICE, BOB]})
    await _publish(db, versions)
    with sqlite3.connect(db) as raw:  # the last 3 kept (--collection-versions 3, no time window)
        assert [r[0] for r in raw.execute("SELECT sequence FROM collection_versions WHERE name = 'p' ORDER BY sequence")] == [8, 9, 10]
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, await _tracker(nursery, db), None)
        (reply,) = await link.request_many([GetCollection("p", 3)], timeout=10)
        assert isinstance(reply, Error) and reply.code == ErrorCode.VERSION_PRUNED and "keeps versions from 8 on" in reply.message
        assert reply.sequence == 8  # the oldest kept, as a number (PROTOCOL.md §8.11)
        # Kept version 2 (owner ALICE): 8 and 9 are BOB's, whom 2 does not know; 10 is ALICE's: followed from it.
        assert await fetch_following(link, "p", versions[1]) == versions[9]
        assert "versions 3 to 7 were pruned on the tracker; version 10 is signed by" in caplog.text
        # Kept version 4 (owners ALICE and BOB): 8 is BOB's, and 9 and 10 are checked step by step from it.
        caplog.clear()
        assert await fetch_following(link, "p", versions[3]) == versions[9]
        assert "version 8 is signed by" in caplog.text
        # A node that kept nothing: the oldest kept, as a first version is (signed by one of its own owners).
        assert await fetch_following(link, "p") == versions[9]
        nursery.cancel_scope.cancel()


async def test_a_forged_version_is_still_refused_after_pruning(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "t.db"
    versions = chain("f", 10)
    await _publish(db, versions)
    # After the trusted versions 8-10, an 11th signed by MALLORY, who is no owner.
    forged = chain("f", 1, signers={11: MALLORY}, owners={11: [MALLORY]}, start=versions[-1])
    _write_behind(db, forged)
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, await _tracker(nursery, db), None)
        with pytest.raises(NotAnOwner):
            await fetch_following(link, "f", versions[1])
        nursery.cancel_scope.cancel()
    # Every version kept replaced by MALLORY's own chain (it says MALLORY owns it): nothing vouches for it.
    with sqlite3.connect(db) as raw:
        raw.execute("DELETE FROM collection_versions WHERE name = 'f'")
    stub = sign_version(MALLORY, "f", 7, ZERO, [], [MALLORY.public_key])
    _write_behind(db, chain("f", 4, signers=dict.fromkeys(range(8, 12), MALLORY), owners={8: [MALLORY]}, start=stub))
    async with trio.open_nursery() as nursery:
        link = await _link(nursery, await _tracker(nursery, db), None)
        with pytest.raises(NotAnOwner, match="versions 3 to 7 were pruned on the tracker, and no version since is signed by an owner of version 2"):
            await fetch_following(link, "f", versions[1])
        nursery.cancel_scope.cancel()
