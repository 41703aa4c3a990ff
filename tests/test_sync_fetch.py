"""Sync's bulk fetch of small files (in process, real loopback sockets): contents are verified before they are delivered."""

from __future__ import annotations

import os
import pathlib

import trio

from peer.config import PeerConfig
from peer.node import open_peer
from peer.sync.fetch import fetch_small_files
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


async def test_a_content_that_is_not_its_file_id_is_refused(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    tracker = (running.host, running.port)
    files = []
    for i in range(5):
        path = tmp_path / f"small-{i}.txt"
        path.write_bytes(os.urandom(1_000))  # one chunk: its file id is the SHA-256 of its content
        files.append(path)

    def config(label: str) -> PeerConfig:
        return PeerConfig(tracker=tracker, state_dir=tmp_path / label, label=label, connect_timeout=5.0)

    async with open_peer(config("a")) as a, open_peer(config("b")) as b:
        for peer in (a, b):
            await peer.connect()
        by_name = {m.name: m for m in await a.publish(files)}
        manifests = [by_name[path.name] for path in files]
        with open(files[2], "r+b") as changed:  # rewritten in place, the same size: a now serves other bytes under its id
            changed.write(os.urandom(1_000))
        wanted = {m.file_id: (m.size, b"") for m in manifests}
        got: dict[bytes, bytes] = {}

        async def deliver(batch: list[tuple[bytes, bytes]]) -> None:
            got.update(batch)

        failed = await fetch_small_files(b, wanted, deliver)
        assert failed == {manifests[2].file_id}
        assert got == {m.file_id: path.read_bytes() for m, path in zip(manifests, files, strict=True) if m is not manifests[2]}
