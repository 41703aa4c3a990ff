"""A sync node that returns after the tracker pruned the versions it missed (real processes).

The tracker keeps 2 versions of each collection (``--collection-versions 2
--collection-minutes 0``); while b is offline a deletes a file and publishes
several more versions; b, back, follows from the oldest version kept (signed
by an owner it trusts, and says so): the deleted file stays deleted, b's own
offline edit is not lost, and the tracker's table stays within its bound.
"""

from __future__ import annotations

import pathlib
import sqlite3

import pytest
import trio

from tests.procs import start_tracker, wait_until
from tests.test_sync_processes import _SEEN_WITHIN, converged, key_of, stop, sync_node

pytestmark = pytest.mark.slow


def kept_versions(db: pathlib.Path) -> list[int]:
    with sqlite3.connect(db) as raw:
        return [row[0] for row in raw.execute("SELECT sequence FROM collection_versions WHERE name = 'shared' ORDER BY sequence")]


async def test_a_node_behind_the_pruned_range_catches_up(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    db = tmp_path / "t.db"
    async with start_tracker(nursery, db, "--collection-versions", "2", "--collection-minutes", "0") as (_tracker, port):
        async with sync_node(nursery, port, tmp_path, "a", key_of(tmp_path / "state-b")) as node_a:
            a.mkdir(exist_ok=True)
            (a / "doomed.txt").write_text("deleted while b is away")
            (a / "kept.txt").write_text("stays")
            async with sync_node(nursery, port, tmp_path, "b") as node_b:
                await converged(a, b)
                await stop(node_b)
            at = int(kept_versions(db)[-1])
            # b is offline: a deletes one file, then publishes a version per change, far past what the tracker keeps.
            (a / "doomed.txt").unlink()
            for i in range(5):
                await node_a.wait_for(rf"published version {at + i + 1} ")
                (a / f"later-{i}.txt").write_text(f"change {i}")
            await node_a.wait_for(rf"published version {at + 6} ")
            assert kept_versions(db) == [at + 5, at + 6]  # the bound: 2 rows, whatever was published
            (b / "kept.txt").write_text("b's offline edit")
            async with sync_node(nursery, port, tmp_path, "b") as node_b:
                with trio.fail_after(_SEEN_WITHIN):
                    await node_b.wait_for(r"were pruned on the tracker; version \d+ is signed by \w+ \(an owner of version \d+")
                state = await converged(a, b)
                with trio.fail_after(_SEEN_WITHIN):
                    await wait_until(lambda: (a / "kept.txt").read_text() == "b's offline edit", poll=0.05)
    assert "doomed.txt" not in state and not (b / "doomed.txt").exists()
    assert {f"later-{i}.txt" for i in range(5)} <= set(state)
    assert len(kept_versions(db)) == 2
