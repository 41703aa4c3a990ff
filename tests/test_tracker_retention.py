"""Files nobody holds leave the catalogue after the retention period (tracker/retention.py, tracker/store.py)."""

from __future__ import annotations

import pathlib
import sqlite3

import attrs
import pytest
import trio
import trio.testing

from common.messages import Announce, Deregister, FileList, ListFiles, Ok, Publish, Published
from tests.clocks import thread_aware_clock
from tests.tracker_client_helper import TrackerTestClient, make_manifest
from tracker.config import TrackerConfig
from tracker.retention import retention_loop, sweep, sweep_interval
from tracker.service import TrackerService
from tracker.store import Store

DAY = 86400.0
CONFIG = TrackerConfig(heartbeat_interval=10.0, peer_timeout=30.0, idle_timeout=60.0, retention=10 * DAY)


@attrs.define
class WallClock:
    """The store's wall clock, moved by the test."""

    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _client(service: TrackerService, nursery: trio.Nursery, host: str) -> TrackerTestClient:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(service.handle_stream, server_stream, (host, 40000))
    return TrackerTestClient(client_stream)


async def _listed(client: TrackerTestClient) -> set[str]:
    reply = await client.request(ListFiles())
    assert isinstance(reply, FileList)
    return {entry.name for entry in reply.entries}


async def test_a_file_nobody_holds_leaves_after_the_retention_period(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    wall = WallClock()
    store = Store(tmp_path / "t.db", clock=wall)
    service = TrackerService.create(CONFIG, store)
    held, orphan, fresh = make_manifest("held.bin"), make_manifest("orphan.bin"), make_manifest("fresh.bin")
    keeper = _client(service, nursery, "10.0.0.1")
    await keeper.register()
    for manifest in (held, orphan):
        assert await keeper.request(Publish(manifest)) == Published(manifest.file_id)
    assert await keeper.request(Announce(held.file_id, ((0, 4),))) == Ok()
    # The publisher of orphan.bin never announced it; nobody holds it.
    assert await sweep(service) == []  # everything was published just now
    wall.now += 9 * DAY
    assert await sweep(service) == []
    assert await keeper.request(Publish(fresh)) == Published(fresh.file_id)
    wall.now += 2 * DAY  # orphan: 11 days unheld; held: held all along; fresh: a day old
    assert [m.name for m in await sweep(service)] == ["orphan.bin"]
    assert await _listed(keeper) == {"held.bin", "fresh.bin"}
    # ... and from the database: a restart does not bring it back.
    assert {m.name for m in Store(tmp_path / "t.db").load()} == {"held.bin", "fresh.bin"}
    # The holder leaves: held.bin goes once 10 days have passed since it was last seen held.
    assert await keeper.request(Deregister()) == Ok()
    wall.now += 5 * DAY
    assert await sweep(service) == []
    wall.now += 6 * DAY  # held.bin: last seen held 11 days ago; fresh.bin: published 13 days ago
    assert {m.name for m in await sweep(service)} == {"held.bin", "fresh.bin"}
    assert await _listed(keeper) == set()
    store.close()


async def test_a_file_published_again_before_the_delete_stays(tmp_path: pathlib.Path) -> None:
    wall = WallClock()
    with Store(tmp_path / "t.db", clock=wall) as store:
        manifest = make_manifest("back.bin")
        store.save(manifest)
        wall.now += 11 * DAY
        cutoff = wall.now - 10 * DAY
        assert store.unheld_since(cutoff) == [manifest.file_id]
        store.save(manifest)  # published again between the look-up and the delete
        store.delete([manifest.file_id], unheld_since=cutoff)
        assert [m.name for m in store.load()] == ["back.bin"]
        store.touch([manifest.file_id])
        assert store.unheld_since(cutoff) == []


def test_a_database_from_before_retention_is_migrated(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "old.db"
    manifest = make_manifest("old.bin")
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE files (seq INTEGER PRIMARY KEY AUTOINCREMENT, file_id BLOB NOT NULL UNIQUE, name TEXT NOT NULL, "
               "size INTEGER NOT NULL, chunk_size INTEGER NOT NULL, hashes BLOB NOT NULL, "
               "published REAL NOT NULL DEFAULT (julianday('now')))")  # fmt: skip
    name, size, chunk_size, file_id, hashes = manifest.record()
    # Published on 2026-01-01 00:00 UTC (Unix time 1767225600).
    db.execute("INSERT INTO files (file_id, name, size, chunk_size, hashes, published) VALUES (?, ?, ?, ?, ?, julianday('2026-01-01'))",
               (file_id, name, size, chunk_size, hashes))  # fmt: skip
    db.commit()
    db.close()
    with Store(path, clock=WallClock(1767225600.0 + 5 * DAY)) as store:
        assert [m.name for m in store.load()] == ["old.bin"]
        assert store.unheld_since(1767225600.0 + 1) == [file_id]  # its publish time stands in for last_held
        assert store.unheld_since(1767225600.0 - 1) == []


@pytest.mark.parametrize(("retention", "interval"), [(30 * DAY, 3600.0), (600.0, 60.0)])
def test_the_sweep_interval(retention: float, interval: float) -> None:
    assert sweep_interval(retention) == interval


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> trio.testing.MockClock:
    # Worker threads are used here: the clock holds still while one runs (see tests/clocks.py).
    return thread_aware_clock(monkeypatch)


async def test_the_loop_waits_a_peer_timeout_before_its_first_sweep(clock: trio.testing.MockClock) -> None:
    wall = WallClock()
    with Store(None, clock=wall) as store:
        config = attrs.evolve(CONFIG, retention=600.0, peer_timeout=300.0, idle_timeout=400.0)
        service = TrackerService.create(config, store)
        store.save(make_manifest("gone.bin"))
        service.registry.publish(make_manifest("gone.bin"), checked=True)
        wall.now += 700
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retention_loop, service)
            await trio.sleep(299)  # after a restart, peers get a peer timeout to come back
            assert service.registry.file_count == 1
            await trio.sleep(2)
            assert service.registry.file_count == 0
            nursery.cancel_scope.cancel()
    with Store(None) as store:  # retention 0: kept for ever, no loop at all
        with trio.move_on_after(1) as scope:
            await retention_loop(TrackerService.create(attrs.evolve(CONFIG, retention=0), store))
        assert not scope.cancelled_caught
