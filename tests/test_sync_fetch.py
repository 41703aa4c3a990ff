"""Sync's bulk fetch of small files (in process, real loopback sockets): contents are verified before they are delivered."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import pytest
import trio

from common.messages import Message, WhoHas
from peer.config import PeerConfig
from peer.node import open_peer
from peer.sync.fetch import fetch_small_files
from peer.tracker_client import TrackerClient
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


async def test_files_are_asked_of_their_author_and_looked_up_only_when_it_cannot_serve_them(
        nursery: trio.Nursery, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    tracker = (running.host, running.port)
    contents = [os.urandom(1_000) for _ in range(5)]  # one chunk each: a file id is the SHA-256 of its content
    copies: dict[str, list[pathlib.Path]] = {}
    for label in ("a", "c"):
        (tmp_path / f"files-{label}").mkdir()
        copies[label] = [tmp_path / f"files-{label}" / f"small-{i}.txt" for i in range(len(contents))]
        for path, content in zip(copies[label], contents, strict=True):
            path.write_bytes(content)

    def config(label: str) -> PeerConfig:
        return PeerConfig(tracker=tracker, state_dir=tmp_path / label, label=label, connect_timeout=5.0)

    async with open_peer(config("a")) as a, open_peer(config("b")) as b, open_peer(config("c")) as c:
        for peer in (a, b, c):
            await peer.connect()
        by_name = {m.name: m for m in await a.publish(copies["a"])}
        await c.publish(copies["c"])
        manifests = [by_name[path.name] for path in copies["a"]]
        with open(copies["a"][2], "r+b") as changed:  # the author now serves other bytes under this id; c the right ones
            changed.write(os.urandom(1_000))
        asked: list[WhoHas] = []
        request_many = TrackerClient.request_many

        async def counted(self: TrackerClient, messages: Sequence[Message]) -> list[Message]:
            if self is b.tracker:
                asked.extend(m for m in messages if isinstance(m, WhoHas))
            return await request_many(self, messages)

        monkeypatch.setattr(TrackerClient, "request_many", counted)
        wanted = {m.file_id: (m.size, a.peer_id[:8]) for m in manifests}  # a, the author of every change
        got: dict[bytes, bytes] = {}

        async def deliver(batch: list[tuple[bytes, bytes]]) -> None:
            got.update(batch)

        assert await fetch_small_files(b, wanted, deliver) == set()
        assert got == {m.file_id: content for m, content in zip(manifests, contents, strict=True)}
        # One WHO_HAS to find the author, one for the file it served wrong (had from c): not one per file.
        assert [m.file_id for m in asked] == [manifests[0].file_id, manifests[2].file_id]
