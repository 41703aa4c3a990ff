"""Sync's bulk fetch of small files in a private swarm (in process, real loopback sockets): TLS, the proof, the holder pinned."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest
import trio

from common.swarm import SwarmFile
from peer.config import PeerConfig
from peer.node import open_peer
from peer.sync.fetch import _one_connection, fetch_small_files
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


async def test_bulk_fetch_is_private_and_pins_the_holder(nursery: trio.Nursery, tmp_path: pathlib.Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.INFO, "peer.sync.fetch")
    swarm = SwarmFile.create("office")
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, swarm=swarm))
    tracker = (running.host, running.port)
    files = []
    for i in range(3):
        path = tmp_path / f"small-{i}.txt"
        path.write_bytes(os.urandom(1_000))  # one chunk: its file id is the SHA-256 of its content
        files.append(path)

    def config(label: str) -> PeerConfig:
        return PeerConfig(tracker=tracker, state_dir=tmp_path / label, label=label, swarm=swarm, connect_timeout=5.0)

    async with open_peer(config("a")) as a, open_peer(config("b")) as b, open_peer(config("c")) as c:
        for peer in (a, b, c):
            await peer.connect()
        manifests = await a.publish(files)
        assert all(m.chunk_count == 1 for m in manifests)
        wanted = {m.file_id: (m.size, b"") for m in manifests}
        got: dict[bytes, bytes] = {}

        async def deliver(batch: list[tuple[bytes, bytes]]) -> None:
            got.update(batch)

        # The holders the tracker lists, over TLS with the proof: every file arrives, verified.
        assert await fetch_small_files(b, wanted, deliver) == set()
        assert got == {m.file_id: path.read_bytes() for m, path in zip(manifests, files, strict=True)}

        # a's address under c's peer id (a tracker that lies, or a stale listing): a is a member, but not the
        # node expected there, and nothing is taken from it.
        got.clear()
        failed: set[bytes] = set()
        await _one_connection(b, (c.peer_id, *a.listen_address), list(wanted), wanted, deliver, failed)
        assert failed == set(wanted) and got == {}
        assert "is not the one expected" in caplog.text
