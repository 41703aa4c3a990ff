"""``chunkswarm sync status DIR``: the status file a running sync keeps, drawn with rich."""

from __future__ import annotations

import json
import pathlib
import time

from click.testing import CliRunner

from chunkswarm.cli import cli
from common.collection import Entry
from common.manifest import sha256
from common.sync_merge import Plan
from common.sync_rules import short_node
from peer.sync.status import taken_line


def test_status_shows_nodes_changes_and_transfers(tmp_path: pathlib.Path) -> None:
    me, other = bytes(range(8)), bytes(range(8, 16))
    now = time.time()
    status = {
        "collection": "shared", "me": me.hex(), "pid": 1, "written": now, "sequence": 7, "refused": "", "files_total": 2,
        "nodes": [{"id": me.hex(), "online": True, "last_seen": now}, {"id": other.hex(), "online": False, "last_seen": now - 600}],
        "files": [{"path": "docs/report.txt", "size": 2048, "deleted": False, "mtime_ns": int(now * 1e9), "by": other.hex()},
                  {"path": "old.txt", "size": 0, "deleted": True, "mtime_ns": int(now * 1e9), "by": me.hex()}],
        "transfers": [{"path": "video.mkv", "size": 100 * 2**20, "done": 25 * 2**20}],
    }  # fmt: skip
    (tmp_path / ".chunkswarm").mkdir()
    (tmp_path / ".chunkswarm/status.json").write_text(json.dumps(status))
    result = CliRunner().invoke(cli, ["sync", "status", str(tmp_path), "--once"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "collection shared" in text and "version 7" in text
    assert f"{short_node(me)} (this node)" in text and "online" in text
    assert short_node(other) in text and "offline" in text and "10 min ago" in text
    assert "docs/report.txt" in text and "2.0 KiB" in text and "deleted" in text
    assert "video.mkv" in text and "26.2/104.9 MB" in text  # rich's DownloadColumn counts in decimal units


def test_status_of_a_folder_never_synced(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(cli, ["sync", "status", str(tmp_path), "--once"])
    assert result.exit_code == 0 and "no sync has run here yet" in result.output


def test_sync_needs_a_collection(tmp_path: pathlib.Path) -> None:
    result = CliRunner().invoke(cli, ["sync", str(tmp_path)])
    assert result.exit_code != 0 and "--collection" in result.output
    result = CliRunner().invoke(cli, ["sync", str(tmp_path), "--collection", "x", "--owner", "nothex"])
    assert result.exit_code != 0 and "not a node's public key" in result.output


def test_the_receiving_node_says_what_it_took() -> None:
    # Others' changes written here were logged at DEBUG only: a user watching the receiving node saw nothing.
    def entry(path: str, deleted: bool = False) -> Entry:
        return Entry(path, 0 if deleted else 5, bytes(32) if deleted else sha256(path.encode()), 0o644, 1, deleted=deleted)

    plan = Plan(take=(entry("a"), entry("b"), entry("c", deleted=True)), drop=("d",))
    assert taken_line(plan, 0.5, 0) == "took 4 changes from other nodes (2 written, 2 deleted) in 0.50 s"
    assert taken_line(Plan(take=(entry("a"),)), 1.234, 1) == "took 1 change from other nodes (1 written) in 1.23 s; 1 left for the next try"
    assert taken_line(Plan(), 0.1, 0) is None
