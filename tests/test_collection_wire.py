"""Collections on the wire (PROTOCOL.md §8.11) against a real tracker over 127.0.0.1, through peer/collections.py."""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3

import pytest
import trio

from common.capabilities import COLLECTIONS, WITHDRAW
from common.collection import CollectionVersion, Entry, encode_version, sign_version
from common.collection_messages import GetCollection
from common.errors import CollectionConflict, ConnectionClosed, IntegrityError, NotAnOwner, TrackerError
from common.framing import ErrorCode
from common.identity import NodeKey
from common.manifest import Manifest, build_manifest
from common.messages import Error, Hello, Publish, Published
from peer.collections import (
    collection_request,
    fetch_collection,
    fetch_following,
    publish_collection,
    watch_collection,
)
from peer.tracker_client import TrackerLink
from tracker.config import TrackerConfig
from tracker.service import serve_tracker

ZERO = bytes(32)
ALICE, BOB, MALLORY = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()


def _files(tmp_path: pathlib.Path, count: int) -> list[Manifest]:
    manifests = []
    for i in range(count):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(3000 + i))
        manifests.append(build_manifest(path, chunk_size=1024))
    return manifests


def _entries(manifests: list[Manifest], prefix: str = "dir/") -> list[Entry]:
    return [Entry(f"{prefix}{m.name}", m.size, m.file_id, 0o644, 0) for m in manifests]


async def _link(nursery: trio.Nursery, tracker: tuple[str, int], key: NodeKey | None, *, offer: bool = True) -> TrackerLink:
    capabilities = {COLLECTIONS: 1, WITHDRAW: 1} if offer else {WITHDRAW: 1}
    hello = Hello((key or NodeKey.generate()).peer_id, 7000, capabilities=capabilities)
    link = await TrackerLink.open(tracker, hello, timeout=10, register_port=7000, key=key)

    async def run() -> None:
        with contextlib.suppress(ConnectionClosed):  # the tracker closed it: the test looks at the reply
            await link.run()

    nursery.start_soon(run)
    return link


async def _tracker(nursery: trio.Nursery, db: pathlib.Path) -> tuple[str, int]:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=str(db)))
    return running.host, running.port


async def _publish_files(link: TrackerLink, manifests: list[Manifest]) -> None:
    replies = await link.request_many([Publish(m) for m in manifests], timeout=10)
    assert all(isinstance(r, Published) for r in replies), replies


async def test_publish_get_and_survive_a_restart(tmp_path: pathlib.Path) -> None:
    manifests = _files(tmp_path, 5)
    version = sign_version(ALICE, "photos", 1, ZERO, _entries(manifests), [ALICE.public_key])
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, tmp_path / "t.db")
        link = await _link(nursery, tracker, ALICE)
        # The files and the collection in one pipelined write: one round trip.
        replies = await link.request_many([*(Publish(m) for m in manifests), collection_request(version)], timeout=10)
        assert [type(r).__name__ for r in replies] == ["Published"] * 5 + ["Ok"]
        assert await fetch_collection(link, "photos") == version
        assert await fetch_collection(link, "nothing") is None
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, tmp_path / "t.db")
        link = await _link(nursery, tracker, None)
        again = await fetch_collection(link, "photos")
        assert again == version and again is not None and again.root == version.root
        nursery.cancel_scope.cancel()


async def test_only_owners_change_a_collection_and_stale_parents_conflict(tmp_path: pathlib.Path) -> None:
    manifests = _files(tmp_path, 3)
    v1 = sign_version(ALICE, "set", 1, ZERO, _entries(manifests[:1]), [ALICE.public_key])
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, tmp_path / "t.db")
        link = await _link(nursery, tracker, ALICE)
        await _publish_files(link, manifests)
        await publish_collection(link, v1)
        # Someone else's version: refused, and the connection serves on.
        forged = sign_version(MALLORY, "set", 2, v1.root, _entries(manifests), [MALLORY.public_key])
        with pytest.raises(TrackerError) as refused:
            await publish_collection(link, forged)
        assert refused.value.code == ErrorCode.NOT_AN_OWNER and "not an owner" in str(refused.value)
        # A tampered version (the signature covers the root): refused.
        v2 = sign_version(ALICE, "set", 2, v1.root, _entries(manifests[:2]), [ALICE.public_key, BOB.public_key])
        tampered = CollectionVersion(v2.name, 2, v1.root, tuple(_entries(manifests)), v2.owners, v2.signer, v2.signature)
        with pytest.raises(TrackerError) as refused:
            await publish_collection(link, tampered)
        assert refused.value.code == ErrorCode.NOT_AN_OWNER
        await publish_collection(link, v2)
        # Another version 2 (its parent is now stale): a conflict naming the current sequence.
        late = sign_version(ALICE, "set", 2, v1.root, _entries(manifests[2:]), [ALICE.public_key])
        with pytest.raises(CollectionConflict) as conflict:
            await publish_collection(link, late)
        assert conflict.value.current_sequence == 2 and conflict.value.code == ErrorCode.COLLECTION_CONFLICT and conflict.value.sequence == 2
        # Bob, added by v2, may sign v3; an unlisted file is refused.
        unlisted = Entry("ghost", 1, b"g" * 32, 0o644, 0)
        with pytest.raises(TrackerError) as refused:
            await publish_collection(link, sign_version(BOB, "set", 3, v2.root, [unlisted], v2.owners))
        assert refused.value.code == ErrorCode.UNKNOWN_FILE
        deletion = Entry("gone", 0, ZERO, 0, 0, deleted=True)
        v3 = sign_version(BOB, "set", 3, v2.root, [*_entries(manifests), deletion], v2.owners)
        await publish_collection(link, v3)
        # A client that kept v1 checks every step up to v3.
        assert await fetch_following(link, "set", v1) == v3
        assert await fetch_following(link, "set") == v3
        nursery.cancel_scope.cancel()


async def test_peers_refuse_a_version_the_tracker_should_not_have(tmp_path: pathlib.Path) -> None:
    """A tracker that serves a version no owner signed (written into its database behind its back) is not believed."""
    manifests = _files(tmp_path, 2)
    db = tmp_path / "t.db"
    v1 = sign_version(ALICE, "set", 1, ZERO, _entries(manifests[:1]), [ALICE.public_key])
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, db)
        link = await _link(nursery, tracker, ALICE)
        await _publish_files(link, manifests)
        await publish_collection(link, v1)
        nursery.cancel_scope.cancel()
    forged = sign_version(MALLORY, "set", 2, v1.root, _entries(manifests), [MALLORY.public_key])
    # v3 follows the forged v2 by the rules: only the step before it is wrong.
    onward = sign_version(MALLORY, "set", 3, forged.root, _entries(manifests[1:]), [MALLORY.public_key])
    with sqlite3.connect(db) as raw:
        for version in (forged, onward):
            raw.execute("INSERT INTO collection_versions (name, sequence, data) VALUES (?, ?, ?)", ("set", version.sequence, encode_version(version)))
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, db)
        link = await _link(nursery, tracker, None)
        with pytest.raises(NotAnOwner):
            await fetch_following(link, "set", v1)
        with pytest.raises(NotAnOwner):
            await fetch_following(link, "set")
        # A tracker that rolls back is refused too.
        later = sign_version(ALICE, "set", 5, b"r" * 32, [], [ALICE.public_key])
        with pytest.raises(IntegrityError, match="does not follow"):
            await fetch_following(link, "set", later)
        nursery.cancel_scope.cancel()


async def test_a_watch_answers_at_the_change(tmp_path: pathlib.Path) -> None:
    manifests = _files(tmp_path, 2)
    v1 = sign_version(ALICE, "w", 1, ZERO, _entries(manifests[:1]), [ALICE.public_key])
    v2 = sign_version(ALICE, "w", 2, v1.root, _entries(manifests), [ALICE.public_key])
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, tmp_path / "t.db")
        link = await _link(nursery, tracker, ALICE)
        watcher = await _link(nursery, tracker, None)  # a watch holds its link: one of its own
        await _publish_files(link, manifests)
        assert await watch_collection(watcher, "w", b"", timeout=0.2) is None  # nothing yet, after the wait
        await publish_collection(link, v1)
        assert await watch_collection(watcher, "w", b"", timeout=5) == v1  # at once: it differs already
        assert await watch_collection(watcher, "w", v1.root, timeout=0.2) is None
        seen: list[CollectionVersion | None] = []

        async def watch() -> None:
            seen.append(await watch_collection(watcher, "w", v1.root, timeout=20))

        async with trio.open_nursery() as inner:
            inner.start_soon(watch)
            await trio.sleep(0.2)
            assert not seen  # waiting for a change
            await publish_collection(link, v2)
        assert seen == [v2]
        nursery.cancel_scope.cancel()


async def test_without_the_capability_the_messages_are_violations(tmp_path: pathlib.Path) -> None:
    async with trio.open_nursery() as nursery:
        tracker = await _tracker(nursery, tmp_path / "t.db")
        link = await _link(nursery, tracker, None, offer=False)
        with pytest.raises(TrackerError, match="speaks no collections"):
            await fetch_collection(link, "x")
        (reply,) = await link.request_many([GetCollection("x")], timeout=10)  # sent anyway
        assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_REQUEST and "collections" in reply.message
        nursery.cancel_scope.cancel()
