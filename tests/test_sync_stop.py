"""A sync node stopped mid-cycle saves its index: a file it took, deleted elsewhere while it was away, does not come back.

In process (a tracker and two peers over loopback), so the stop can be put at
one exact point: after b has taken a's file, before b's cycle ends (where it
saves its index on its own). ``chunkswarm sync`` stops the same way: SIGTERM
cancels :meth:`SyncFolder.run`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
import trio

from common.identity import NodeKey
from common.sync_merge import Plan
from peer.config import PeerConfig
from peer.node import open_peer
from peer.sync.apply import Applier
from peer.sync.engine import SyncConfig, SyncFolder
from peer.sync.index import Index
from tests.procs import wait_until
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


async def settled(condition: Callable[[], bool]) -> None:
    with trio.fail_after(60):
        await wait_until(condition, poll=0.05)


async def test_a_stopped_node_keeps_what_it_took(nursery: trio.Nursery, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0))
    key_a, key_b = NodeKey.generate(), NodeKey.generate()
    a_root, b_root = tmp_path / "a", tmp_path / "b"
    a_root.mkdir()
    (a_root / "doomed.txt").write_text("deleted while b is away")

    def config(label: str, key: NodeKey) -> PeerConfig:
        return PeerConfig(tracker=(running.host, running.port), state_dir=tmp_path / f"state-{label}", label=label, node_key=key,
                          connect_timeout=5.0)  # fmt: skip

    async with open_peer(config("a", key_a)) as a, open_peer(config("b", key_b)) as b, trio.open_nursery() as nodes:
        for peer in (a, b):
            await peer.connect()
        folder_a = SyncFolder(a, SyncConfig(a_root, "shared", (key_b.public_key,), fsync=False))
        nodes.start_soon(folder_a.run)
        await settled(lambda: "doomed.txt" in folder_a.index.entries and folder_a.index.sequence >= 1 and not folder_a.index.dirty)

        # b's first cycle takes the file, then hangs (a slow tracker, say) before the cycle's end: b is stopped there.
        first_b = SyncFolder(b, SyncConfig(b_root, "shared", fsync=False))
        took = trio.Event()
        real_apply = Applier.apply

        async def apply_then_hang(self: Applier, plan: Plan) -> int:
            left = await real_apply(self, plan)
            if self is first_b.applier and "doomed.txt" in first_b.index.entries:
                took.set()
                await trio.sleep_forever()
            return left

        monkeypatch.setattr(Applier, "apply", apply_then_hang)
        async with trio.open_nursery() as node_b:
            node_b.start_soon(first_b.run)
            await took.wait()
            node_b.cancel_scope.cancel()
        assert (b_root / "doomed.txt").read_text() == "deleted while b is away"
        saved = Index.load(b_root)
        assert "doomed.txt" in saved.entries and not saved.entries["doomed.txt"].deleted and "doomed.txt" in saved.stats

        # While b is away, a deletes the file; b comes back and deletes it too (its index knows it took it).
        (a_root / "doomed.txt").unlink()
        folder_a.wake(scan=True)
        await settled(lambda: folder_a.index.entries["doomed.txt"].deleted and not folder_a.index.dirty)
        folder_b = SyncFolder(b, SyncConfig(b_root, "shared", fsync=False))
        nodes.start_soon(folder_b.run)
        await settled(lambda: folder_b.index.sequence >= folder_a.index.sequence and not folder_b.index.dirty)
        assert not (b_root / "doomed.txt").exists()
        assert folder_b.index.entries["doomed.txt"].deleted
        nodes.cancel_scope.cancel()
