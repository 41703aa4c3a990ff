"""Folder sync in a private swarm, with real processes: TLS and the proof of membership on every connection sync opens.

Two members converge (adds, an edit, a deletion; small files through the bulk
fetch, a larger one through the general download); a node with another
swarm's file, or with none, gets nothing and says why; a plain client to a
member's chunk server is refused.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from common.codec import Codec
from common.framing import ErrorCode
from common.messages import Error, Hello
from common.swarm import SwarmFile
from peer.connection import Connection
from tests.procs import Child, peer_args, spawn, start_tracker, wait_until
from tests.test_sync_processes import _SEEN_WITHIN, contents, converged, key_of

pytestmark = pytest.mark.slow


def swarm_file(path: pathlib.Path, name: str = "office") -> pathlib.Path:
    """A new swarm's file at ``path`` (mode 0600, as ``chunkswarm swarm init`` writes it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(SwarmFile.create(name).serialize())
    return path


@asynccontextmanager
async def sync_node(nursery: trio.Nursery, port: int, tmp: pathlib.Path, label: str, swarm: pathlib.Path | None, *owners: str,
                    ready: str = r"serving on") -> AsyncIterator[Child]:  # fmt: skip
    args = ["-m", "chunkswarm", "sync", str(tmp / label), "--collection", "shared", "--rescan-interval", "30", "--log-level", "DEBUG",
            *peer_args(port, tmp / f"state-{label}", label)]  # fmt: skip
    if swarm is not None:
        args += ["--swarm", str(swarm)]
    for owner in owners:
        args += ["--owner", owner]
    async with spawn(nursery, *args, name=label) as child:
        try:
            await child.wait_for(ready)
            yield child
        except BaseException:
            print(f"--- {label} ---\n{child.output.decode(errors='replace')}")  # shown with the failure
            raise


async def test_members_converge_and_outsiders_get_nothing(tmp_path: pathlib.Path, nursery: trio.Nursery) -> None:
    office = swarm_file(tmp_path / "office.swarm")
    other = swarm_file(tmp_path / "other.swarm")  # the same name, another secret
    a, b = tmp_path / "a", tmp_path / "b"
    big = os.urandom(3 * 1024 * 1024)  # above sync's small-file size: through the general download
    async with start_tracker(nursery, tmp_path / "t.db", "--swarm", str(office)) as (tracker, port):
        key_b = key_of(tmp_path / "state-b")
        async with sync_node(nursery, port, tmp_path, "a", office, key_b, ready=r"published version") as node_a:
            assert "another node joins with: chunkswarm sync DIR --collection shared --swarm FILE" in node_a.text
            async with sync_node(nursery, port, tmp_path, "b", office) as node_b:
                (a / "sub").mkdir(parents=True, exist_ok=True)
                for i in range(20):  # small files: sync's bulk fetch, on connections of its own
                    (a / "sub" / f"note-{i}.txt").write_text(f"note {i}")
                (a / "big.bin").write_bytes(big)
                state = await converged(a, b)
                assert len(state) == 21 and state["big.bin"] == big
                (b / "sub/note-3.txt").write_text("edited on b")
                with trio.fail_after(_SEEN_WITHIN):
                    await wait_until(lambda: (a / "sub/note-3.txt").read_text() == "edited on b", poll=0.05)
                (a / "sub/note-4.txt").unlink()
                with trio.fail_after(_SEEN_WITHIN):
                    await wait_until(lambda: not (b / "sub/note-4.txt").exists(), poll=0.05)
                assert len(await converged(a, b)) == 20
                assert "member" in tracker.text and "NOT_A_MEMBER" not in node_b.text

                # A plain client at b's chunk server: one ERROR NOT_A_MEMBER, saying why, and the close.
                conn = Connection(await trio.open_tcp_stream(*node_b.address()), codec=Codec())
                with trio.fail_after(10):
                    await conn.send(Hello(b"p" * 20, listen_port=0))
                    refusal = await conn.receive()
                assert isinstance(refusal, Error) and refusal.code == ErrorCode.NOT_A_MEMBER and "TLS only" in refusal.message
                await conn.aclose()

                # Another swarm's file, and none: nothing arrives, and each says why.
                async with sync_node(nursery, port, tmp_path, "c", other) as node_c, sync_node(nursery, port, tmp_path, "d", None) as node_d:
                    with trio.fail_after(_SEEN_WITHIN):
                        await node_c.wait_for(r"NOT_A_MEMBER: not a member of this swarm: the proof of the swarm secret does not match")
                        await node_d.wait_for(r"NOT_A_MEMBER: this tracker serves a private swarm, over TLS only")
                    (a / "after.txt").write_text("members only")
                    with trio.fail_after(_SEEN_WITHIN):
                        await wait_until((b / "after.txt").exists, poll=0.05)
                    assert contents(tmp_path / "c") == {} and contents(tmp_path / "d") == {}
