"""Unpublish (PROTOCOL.md §8.7) and per-publisher quotas (finding 4 of issue 12), against a real tracker over 127.0.0.1."""

from __future__ import annotations

import os
import pathlib

import trio
from click.testing import CliRunner

from chunkswarm.cli import cli
from common.capabilities import UNPUBLISH, WITHDRAW
from common.framing import ErrorCode
from common.identity import NodeKey
from common.manifest import Manifest, build_manifest
from common.messages import Announce, Error, GetManifest, Hello, ManifestReply, Message, Ok, Publish, Published, Register, Unpublish
from peer.connection import Connection
from peer.greeting import connect_tcp, open_greeted
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


def _manifest(tmp_path: pathlib.Path, name: str, size: int = 5000) -> Manifest:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return build_manifest(path, chunk_size=1024)


async def _session(tracker: tuple[str, int], key: NodeKey | None, port: int) -> Connection:
    hello = Hello(os.urandom(20), port, capabilities={UNPUBLISH: 1, WITHDRAW: 1})
    conn, _ = await open_greeted(connect_tcp, tracker, hello, key=key)
    await conn.send(Register(port))
    assert isinstance(await conn.receive(), Ok)
    return conn


async def _ask(conn: Connection, request: Message) -> Message:
    await conn.send(request)
    return await conn.receive()


async def test_a_publisher_unpublishes_its_own_files_and_nobody_else_can(nursery: trio.Nursery, tmp_path: pathlib.Path, state: str | None) -> None:
    db = tmp_path / "tracker.db"
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=str(db), state=state))
    tracker = (running.host, running.port)
    owner, other = NodeKey.generate(), NodeKey.generate()
    manifest = _manifest(tmp_path, "mine.bin")
    mine = await _session(tracker, owner, 7001)
    theirs = await _session(tracker, other, 7002)
    anonymous = await _session(tracker, None, 7003)
    assert isinstance(await _ask(mine, Publish(manifest)), Published)
    assert isinstance(await _ask(mine, Announce(manifest.file_id, ((0, manifest.chunk_count),))), Ok)
    refused = await _ask(theirs, Unpublish(manifest.file_id))
    assert isinstance(refused, Error) and refused.code == ErrorCode.IDENTITY_CONFLICT and "did not publish" in refused.message
    refused = await _ask(anonymous, Unpublish(manifest.file_id))
    assert isinstance(refused, Error) and refused.code == ErrorCode.IDENTITY_REQUIRED
    assert isinstance(await _ask(mine, Unpublish(manifest.file_id)), Ok)
    gone = await _ask(theirs, GetManifest(manifest.file_id))
    assert isinstance(gone, Error) and gone.code == ErrorCode.UNKNOWN_FILE
    # A seeder still announcing it gets UNKNOWN_FILE, and its connection serves on.
    late = await _ask(mine, Announce(manifest.file_id, ((0, 1),)))
    assert isinstance(late, Error) and late.code == ErrorCode.UNKNOWN_FILE
    assert isinstance(await _ask(mine, Publish(manifest)), Published)  # published again: listed again
    assert isinstance(await _ask(theirs, GetManifest(manifest.file_id)), ManifestReply)
    for conn in (mine, theirs, anonymous):
        await conn.aclose()
    store = running.service.store  # SQLite, or Redis (its blocking methods go through the event loop)
    assert [m.file_id for m in await trio.to_thread.run_sync(lambda: list(store.load()))] == [manifest.file_id]
    assert await trio.to_thread.run_sync(store.publishers) == [(manifest.file_id, owner.node_id)]


async def test_quotas_per_publisher(nursery: trio.Nursery, tmp_path: pathlib.Path, state: str | None) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, max_files_per_publisher=2,
                                                                max_manifest_bytes_per_publisher=10 * 32 + 64, state=state))  # fmt: skip
    tracker = (running.host, running.port)
    greedy, modest = NodeKey.generate(), NodeKey.generate()
    conn = await _session(tracker, greedy, 7001)
    first, second, third = (_manifest(tmp_path, f"f{i}.bin") for i in range(3))
    assert isinstance(await _ask(conn, Publish(first)), Published)
    assert isinstance(await _ask(conn, Publish(first)), Published)  # again: costs nothing
    assert isinstance(await _ask(conn, Publish(second)), Published)
    over = await _ask(conn, Publish(third))
    assert isinstance(over, Error) and over.code == ErrorCode.QUOTA_EXCEEDED and "2 files" in over.message
    big = _manifest(tmp_path, "big.bin", 20 * 1024)  # 20 chunks: 640 bytes of hashes, above the byte quota
    other = await _session(tracker, modest, 7002)
    over = await _ask(other, Publish(big))
    assert isinstance(over, Error) and over.code == ErrorCode.QUOTA_EXCEEDED and "MiB" not in over.message
    assert isinstance(await _ask(other, Publish(third)), Published)  # another publisher is unaffected
    assert isinstance(await _ask(conn, Unpublish(first.file_id)), Ok)  # unpublishing gives the quota back
    assert isinstance(await _ask(conn, Publish(third)), Published)
    await conn.aclose()
    await other.aclose()


def test_id_prints_the_node_id_from_a_key_made_once(tmp_path: pathlib.Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["id", "--state-dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert (tmp_path / "node.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(cli, ["id", "--state-dir", str(tmp_path)])
    assert again.output == first.output and first.output.splitlines()[0].count("-") == 7
    (tmp_path / "node.key").write_text("not a key")
    broken = runner.invoke(cli, ["id", "--state-dir", str(tmp_path)])
    assert broken.exit_code != 0 and "node.key is not a chunkswarm node key" in broken.output
