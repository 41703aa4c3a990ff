"""peer/gateway/set_upload.py in one process with a real tracker: POSTs to one set wait for each other; a writer
whose view is stale (another version landed after it looked) meets the tracker's compare-and-swap and is told the
current sequence; what was refused is neither kept nor served."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from common.collection import CollectionVersion
from common.errors import CollectionConflict
from peer.gateway.set_upload import Added, SetWrites, Uploads
from peer.gateway.set_versions import SetVersions, UnknownSet
from tests.test_peer_swarm import Swarm
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker


@pytest.fixture
async def running(nursery: trio.Nursery) -> RunningTracker:
    return await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, heartbeat_interval=1.0, peer_timeout=3.0))


@attrs.define(eq=False)
class Stale(SetVersions):
    """The view of a writer that looked just before another writer's version landed (the window a race hits)."""

    stale: CollectionVersion | None = None

    async def current(self, name: str, *, missing_ok: bool = False) -> CollectionVersion | None:
        return self.stale


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_posts_to_one_set_are_serialized_and_a_second_writer_conflicts(tmp_path: pathlib.Path, running: RunningTracker) -> None:
    swarm = Swarm((running.host, running.port), tmp_path)
    writes = SetWrites("t" * 32, tmp_path / "posts")
    with trio.fail_after(30):
        async with swarm.peer() as node:
            uploads = Uploads(node, SetVersions(node), writes)
            done: list[Added | CollectionConflict] = []

            async def post(to: Uploads, number: int, results: list[Added | CollectionConflict]) -> None:
                incoming = await to.receive(f"f{number}.txt", _body(b"file %d\n" % number))
                try:
                    results.append(await to.add("notes", f"f{number}.txt", incoming))
                except CollectionConflict as exc:
                    results.append(exc)

            async with trio.open_nursery() as posts:  # a new set, four files at once: versions 1 to 4, none refused
                for number in range(4):
                    posts.start_soon(post, uploads, number, done)
            assert sorted(added.version.sequence if isinstance(added, Added) else 0 for added in done) == [1, 2, 3, 4]
            # Another writer (another node, or a gateway of its own) whose view was taken before version 5 landed.
            stale = await uploads.versions.current("notes")
            results: list[Added | CollectionConflict] = []
            await post(uploads, 10, results)
            await post(Uploads(node, Stale(node, stale), writes), 11, results)
            added, conflict = results
            assert isinstance(added, Added) and added.version.sequence == 5
            assert isinstance(conflict, CollectionConflict) and conflict.current_sequence == 5  # the tracker's compare-and-swap
            kept = sorted(p.name for p in (tmp_path / "posts" / "sets" / "notes").iterdir())
            assert kept == ["f0.txt", "f1.txt", "f10.txt", "f2.txt", "f3.txt"]  # the refused one is not kept
            assert not list((tmp_path / "posts" / "incoming").iterdir())
            assert all(held.path.name != "f11.txt" for held in node.library.files.values())  # nor served


async def test_an_older_version_the_tracker_pruned_is_unknown_with_the_reason(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    """``?sequence=`` of a version the tracker no longer keeps (PROTOCOL.md §8.11, VERSION_PRUNED) is a 404, not a 502."""
    config = TrackerConfig(port=0, db_path=None, heartbeat_interval=1.0, peer_timeout=3.0, collection_versions=2, collection_history=0)
    running: RunningTracker = await nursery.start(serve_tracker, config)
    swarm = Swarm((running.host, running.port), tmp_path)
    with trio.fail_after(30):
        async with swarm.peer() as node:
            uploads = Uploads(node, SetVersions(node), SetWrites("t" * 32, tmp_path / "posts"))
            for number in range(4):  # versions 1-4; the tracker keeps 3 and 4
                await uploads.add("notes", f"f{number}.txt", await uploads.receive(f"f{number}.txt", _body(b"%d" % number)))
            versions = SetVersions(node)
            assert (await versions.version("notes", 3)).sequence == 3
            with pytest.raises(UnknownSet, match="does not keep version 2 any more"):
                await versions.version("notes", 1)
