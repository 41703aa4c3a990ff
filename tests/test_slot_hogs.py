"""Issue 12, finding 6 (slot hogs), at the seeder: dozens of chatty connections from one IP leave upload slots for others.

Real loopback sockets: the hogs connect from 127.0.0.2, say HELLO and ask for
one chunk every 20 s, as the hostile-client review did; the honest downloader
comes from 127.0.0.1 and must be served while they stay connected.
"""

from __future__ import annotations

import os
import pathlib

import pytest
import trio

from common.errors import ChunkswarmError
from common.manifest import Manifest
from common.messages import Error, Hello, RequestChunk, Welcome
from peer.config import PeerConfig
from peer.connection import Connection
from peer.node import open_peer
from tracker.config import TrackerConfig
from tracker.service import serve_tracker

HOGS = 40
HOG_HOST = "127.0.0.2"


class Hogs:
    def __init__(self) -> None:
        self.welcomed = 0
        self.refused = 0
        self.closed = 0

    async def hog(self, address: tuple[str, int], manifest: Manifest, *, task_status: trio.TaskStatus[None]) -> None:
        """HELLO, then one cheap request every 20 s, reading whatever comes back, until the seeder closes the connection."""
        conn = Connection(await trio.open_tcp_stream(*address, local_address=HOG_HOST))
        try:
            await conn.send(Hello(os.urandom(20), 0, agent="hog"))
            answer = await conn.receive()
            task_status.started()
            if isinstance(answer, Error):
                self.refused += 1
                return
            assert isinstance(answer, Welcome)
            self.welcomed += 1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drain, conn, nursery.cancel_scope)
                while True:
                    await conn.send(RequestChunk(manifest.file_id, 0))
                    await trio.sleep(20)
        except ChunkswarmError:
            self.closed += 1
        finally:
            await conn.aclose()

    async def _drain(self, conn: Connection, scope: trio.CancelScope) -> None:
        try:
            while True:
                await conn.receive()
        except ChunkswarmError:
            self.closed += 1
            scope.cancel()


@pytest.mark.parametrize("per_ip", [None, 32], ids=["default per-IP cap", "no per-IP cap: fair shares alone"])
async def test_chatty_connections_from_one_ip_leave_slots_for_others(tmp_path: pathlib.Path, per_ip: int | None) -> None:
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(4 * 1024 * 1024))
    hogs = Hogs()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None))
            tracker = (running.host, running.port)
            extra = {} if per_ip is None else {"max_upload_connections_per_ip": per_ip}
            async with open_peer(PeerConfig(tracker=tracker, state_dir=tmp_path / "seeder", label="seeder", **extra)) as seeder:  # type: ignore[arg-type]
                await seeder.connect()
                (manifest,) = await seeder.publish([source.parent])
                for _ in range(HOGS):
                    await nursery.start(hogs.hog, seeder.listen_address, manifest)
                assert hogs.welcomed > PeerConfig().upload_slots  # they did take slots (every upload slot, and the optimistic one)
                config = PeerConfig(tracker=tracker, state_dir=tmp_path / "getter", label="getter", stall_timeout=10.0)
                async with open_peer(config) as getter:
                    await getter.connect()
                    result = await getter.download(manifest.hex_id, tmp_path / "out")
                assert result.path.read_bytes() == source.read_bytes()
            nursery.cancel_scope.cancel()
    print(f"hogs welcomed {hogs.welcomed}, refused {hogs.refused}, closed {hogs.closed}")
