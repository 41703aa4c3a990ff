"""Small files of a version not merged yet, fetched ahead (in process, real loopback sockets): verified, then written by the cycle."""

from __future__ import annotations

import os
import pathlib

import trio

from common.collection import Entry, sign_version
from common.manifest import ZERO_HASH
from common.sync_merge import Plan
from peer.config import PeerConfig
from peer.node import open_peer
from peer.storage.manifest_cache import ManifestCache
from peer.sync.apply import Applier
from peer.sync.index import Index
from peer.sync.local import LocalSide
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


async def test_a_version_s_files_fetched_ahead_are_written_by_its_cycle(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    tracker = (running.host, running.port)
    (tmp_path / "files").mkdir()
    files = [tmp_path / "files" / f"small-{i}.txt" for i in range(6)]
    contents = [os.urandom(900 + i) for i in range(len(files))]  # at most 1 KiB: one chunk, its file id its SHA-256
    for path, content in zip(files, contents, strict=True):
        path.write_bytes(content)
    root = tmp_path / "b-folder"
    root.mkdir()

    def config(label: str) -> PeerConfig:
        return PeerConfig(tracker=tracker, state_dir=tmp_path / label, label=label, connect_timeout=5.0, request_timeout=5.0)

    async with open_peer(config("b")) as b:
        await b.connect()
        applier = Applier(LocalSide(b, root, Index(), b"B" * 8, ManifestCache(tmp_path / "manifests")), fsync=False)
        applier.nursery = nursery
        async with open_peer(config("a")) as a:
            await a.connect()
            by_name = {m.name: m for m in await a.publish(files)}
            manifests = [by_name[path.name] for path in files]
            with open(files[3], "r+b") as changed:  # rewritten in place: a serves other bytes under this id
                changed.write(os.urandom(903))
            entries = [Entry(f"d/f{i}", m.size, m.file_id, 0o644, 1_000_000_000, modified_by=a.peer_id[:8]) for i, m in enumerate(manifests)]
            version = sign_version(a.config.node_key, "c", 2, ZERO_HASH, entries, [a.config.node_key.public_key])
            applier.fetch_ahead(version)  # as the listener does when it sees a version, before a cycle merges it
            assert applier.ahead.running
            for _ids, done in list(applier.ahead.running):
                await done.wait()
        # a is gone: what the cycle writes now was fetched ahead, its content checked (the wrong one refused).
        left = await applier.apply(Plan(take=tuple(entries)))
        assert left == 1
        for i, (entry, content) in enumerate(zip(entries, contents, strict=True)):
            if i == 3:
                assert not (root / entry.path).exists()
            else:
                assert (root / entry.path).read_bytes() == content
                assert applier.local.index.entries[entry.path] == entry
        assert not applier.ahead.contents and not applier.ahead.asked
