"""Sync's bulk fetch of many small files over several connections to one holder (in process, real loopback sockets)."""

from __future__ import annotations

import logging
import os
import pathlib

import pytest
import trio

from peer.config import PeerConfig
from peer.node import open_peer
from peer.sync.fetch import fetch_small_files
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


async def test_connections_sharing_a_queue_end_when_it_is_empty(nursery: trio.Nursery, tmp_path: pathlib.Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    # A connection whose requester waits for a free slot while the others take the last files has nothing
    # pending once its replies are in: it must end then, not wait for a message that will not come (the
    # request timeout, 15 s by default: a stall of every cycle's last files).
    caplog.set_level(logging.INFO, "peer.sync.fetch")
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    tracker = (running.host, running.port)
    files = []
    for i in range(600):
        path = tmp_path / "files" / f"small-{i}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(200 + i))  # at most 1 KiB: one chunk
        files.append(path)

    def config(label: str) -> PeerConfig:
        return PeerConfig(tracker=tracker, state_dir=tmp_path / label, label=label, connect_timeout=5.0, request_timeout=3600.0)

    async with open_peer(config("a")) as a, open_peer(config("b")) as b:
        for peer in (a, b):
            await peer.connect()
        manifests = await a.publish(files)
        wanted = {m.file_id: (m.size, b"") for m in manifests}
        got: dict[bytes, bytes] = {}

        async def deliver(batch: list[tuple[bytes, bytes]]) -> None:
            got.update(batch)

        for _ in range(5):
            got.clear()
            with trio.fail_after(300):  # a bound on a hang (request_timeout is an hour), not a measurement
                assert await fetch_small_files(b, wanted, deliver) == set()
            assert len(got) == len(files)
        assert "stopped" not in caplog.text
