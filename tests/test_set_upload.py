"""peer/gateway/set_upload.py in one process with a real tracker: POSTs to one set wait for each other; two writers
that do not (two gateways of one node) meet the tracker's compare-and-swap, and the one that came second is told the
current sequence; what was refused is neither kept nor served."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
import trio

from common.errors import CollectionConflict
from peer.gateway.set_upload import Added, SetWrites, Uploads
from peer.gateway.set_versions import SetVersions
from tests.test_peer_swarm import Swarm
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker


@pytest.fixture
async def running(nursery: trio.Nursery) -> RunningTracker:
    return await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, heartbeat_interval=1.0, peer_timeout=3.0))


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_posts_to_one_set_are_serialized_and_a_second_writer_conflicts(tmp_path: pathlib.Path, running: RunningTracker) -> None:
    swarm = Swarm((running.host, running.port), tmp_path)
    writes = SetWrites("t" * 32, tmp_path / "posts")
    with trio.fail_after(30):
        async with swarm.peer() as node:
            uploads = Uploads(node, SetVersions(node), writes)
            done: list[Added] = []

            async def post(to: Uploads, number: int, results: list[Added | CollectionConflict]) -> None:
                incoming = await to.receive(f"f{number}.txt", _body(b"file %d\n" % number))
                try:
                    results.append(await to.add("notes", f"f{number}.txt", incoming))
                except CollectionConflict as exc:
                    results.append(exc)

            async with trio.open_nursery() as posts:  # a new set, four files at once: versions 1 to 4, none refused
                for number in range(4):
                    posts.start_soon(post, uploads, number, done)
            assert sorted(added.version.sequence for added in done) == [1, 2, 3, 4]  # type: ignore[union-attr]
            # Another writer with a lock of its own: both build version 5, the tracker takes the first.
            other = Uploads(node, SetVersions(node), writes)
            results: list[Added | CollectionConflict] = []
            async with trio.open_nursery() as posts:
                posts.start_soon(post, uploads, 10, results)
                posts.start_soon(post, other, 11, results)
            conflicts = [r for r in results if isinstance(r, CollectionConflict)]
            added = [r for r in results if isinstance(r, Added)]
            assert len(conflicts) == 1 and conflicts[0].current_sequence == 5 and [a.version.sequence for a in added] == [5]
            taken = added[0].version.entries[added[0].index].path
            kept = sorted(p.name for p in (tmp_path / "posts" / "sets" / "notes").iterdir())
            assert kept == sorted([*(f"f{n}.txt" for n in range(4)), taken]) and taken in ("f10.txt", "f11.txt")
            assert not list((tmp_path / "posts" / "incoming").iterdir())
            refused = "f11.txt" if taken == "f10.txt" else "f10.txt"
            assert all(held.path.name != refused for held in node.library.files.values())  # not served
