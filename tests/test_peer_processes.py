"""Scenarios that need a real kill: peers as ``python -m chunkswarm`` subprocesses, SIGKILLed mid-transfer."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from common.manifest import build_manifest
from peer.node import Peer
from tests.procs import Child, spawn
from tests.test_peer_swarm import Swarm, offer, swarm, tracker  # noqa: F401  (fixtures)

CHUNK = 16 * 1024


@asynccontextmanager
async def child(nursery: trio.Nursery, *args: str) -> AsyncIterator[Child]:
    async with spawn(nursery, "-m", "chunkswarm", *args) as proc:
        yield proc


def common_args(swarm: Swarm, state: pathlib.Path, label: str) -> list[str]:
    return ["--tracker", f"{swarm.tracker[0]}:{swarm.tracker[1]}", "--state-dir", str(state), "--label", label]


class KillOnFirstChunk:
    """A progress sink that SIGKILLs a seeder as soon as one chunk came from it."""

    def __init__(self, victim: Child, label: str) -> None:
        self.victim, self.label = victim, label
        self.killed = False

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        pass

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        if not self.killed and source_label.startswith(self.label):
            self.victim.kill()
            self.killed = True

    def peers(self, count: int) -> None:
        pass

    def finished(self) -> None:
        pass


async def test_seeder_killed_mid_transfer(swarm: Swarm, nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "src" / "big.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(8 * 1024 * 1024))
    manifest = build_manifest(source, CHUNK)
    with trio.fail_after(40):
        async with child(nursery, "seed", str(source), "--chunk-size", str(CHUNK), *common_args(swarm, tmp_path / "a", "seed-a")) as a, \
                child(nursery, "seed", str(source), "--chunk-size", str(CHUNK), *common_args(swarm, tmp_path / "b", "seed-b")) as b:
            await a.wait_for("seeding big.bin")
            await b.wait_for("seeding big.bin")
            assert b"serving on 127.0.0.1:" in a.output
            async with swarm.peer(chunk_size=CHUNK, request_timeout=3.0) as getter:
                sink = KillOnFirstChunk(a, "seed-a")
                result = await getter.download("big.bin", tmp_path / "out", progress=sink)
            assert sink.killed
            assert result.path.read_bytes() == source.read_bytes()
            counts = {name.split(" ")[0]: c.chunks for name, c in result.received.items()}
            assert 0 < counts["seed-a"] < manifest.chunk_count
            assert counts["seed-b"] == manifest.chunk_count - counts["seed-a"]


async def test_killed_download_resumes_with_only_the_missing_chunks(swarm: Swarm, nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(4 * 1024 * 1024 + 7))
    manifest = build_manifest(source, CHUNK)
    half = manifest.chunk_count // 2
    out = tmp_path / "out"
    state_file = out / "data.bin.part.state"
    with trio.fail_after(40):
        async with swarm.peer(chunk_size=CHUNK) as partial:
            await offer(partial, source, manifest, range(half))
            async with child(nursery, "get", "data.bin", "-o", f"{out}/", *common_args(swarm, tmp_path / "g", "getter")) as get:
                # The getter takes the half it can find, then waits for the rest: kill it then.
                while True:
                    await trio.sleep(0.05)
                    try:
                        state = json.loads(state_file.read_text())
                    except (OSError, ValueError):
                        continue
                    if state["done"] == [[0, half]]:
                        break
                get.kill()
                assert await get.process.wait() == -signal.SIGKILL
            assert (out / "data.bin.part").exists() and not (out / "data.bin").exists()

            async def full_seeder(peer: Peer) -> None:
                await peer.publish([source])

            async with swarm.peer(chunk_size=CHUNK) as full, swarm.peer(chunk_size=CHUNK) as getter:
                await full_seeder(full)
                result = await getter.download("data.bin", out)
            assert result.chunks_resumed == half
            assert result.chunks_received == manifest.chunk_count - half
            assert result.path.read_bytes() == source.read_bytes()
            assert not state_file.exists()


async def test_cli_get_errors_and_ls(swarm: Swarm, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(b"x" * 5000)
    caplog.set_level(logging.INFO, logger="tracker")
    with trio.fail_after(30):
        async with swarm.peer(chunk_size=CHUNK) as seeder:
            await seeder.publish([source])
            tracker = f"{swarm.tracker[0]}:{swarm.tracker[1]}"
            env = {**os.environ, "CHUNKSWARM_TRACKER": tracker, "COLUMNS": "200"}
            joined = caplog.text.count(" joined, serving at ")
            listing = await trio.run_process([sys.executable, "-m", "chunkswarm", "ls"],
                                             capture_stdout=True, capture_stderr=True, env=env)
            assert b"data.bin" in listing.stdout and b"4.9 KiB" in listing.stdout
            assert f"1\u00d7{CHUNK // 1024} KiB".encode() in listing.stdout  # each file's chunk count and chunk size
            # ls only asks (HELLO with listen_port 0, no REGISTER): it never joins the swarm.
            assert caplog.text.count(" joined, serving at ") == joined == 1
            counters = await trio.run_process([sys.executable, "-m", "chunkswarm", "stats"],
                                              capture_stdout=True, capture_stderr=True, env=env)
            rows = dict(re.findall(r"│ ([a-z ]+?) +│ +([\d,]+(?: s)?) │", counters.stdout.decode()))
            assert (rows["peers"], rows["files"], rows["replicas"]) == ("1", "1", "1"), counters.stdout
            assert rows["uptime"].endswith(" s") and caplog.text.count(" joined, serving at ") == 1
            unknown = await trio.run_process([sys.executable, "-m", "chunkswarm", "get", "nope.bin", "--state-dir", str(tmp_path / "u")],
                                             capture_stdout=True, capture_stderr=True, env=env, check=False)
            assert unknown.returncode != 0 and b"no file named 'nope.bin'" in unknown.stderr
            down = await trio.run_process([sys.executable, "-m", "chunkswarm", "get", "--tracker", "127.0.0.1:1", "data.bin",
                                           "--state-dir", str(tmp_path / "u")], capture_stdout=True, capture_stderr=True, check=False)
            assert down.returncode != 0 and b"unreachable" in down.stderr
            got = await trio.run_process([sys.executable, "-m", "chunkswarm", "get", "data.bin", "-o", f"{tmp_path / 'out'}/",
                                          "--state-dir", str(tmp_path / "g")], capture_stdout=True, capture_stderr=True, env=env)
            assert (tmp_path / "out" / "data.bin").read_bytes() == source.read_bytes(), got.stderr
            blocker = tmp_path / "blocker"
            blocker.write_text("a file, not a directory")
            unwritable = await trio.run_process([sys.executable, "-m", "chunkswarm", "get", "data.bin", "-o", str(blocker / "sub"),
                                                 "--state-dir", str(tmp_path / "g")], capture_stdout=True, capture_stderr=True, env=env,
                                                check=False)
            assert unwritable.returncode != 0 and b"cannot" in unwritable.stderr and b"Traceback" not in unwritable.stderr
            other = tmp_path / "other" / "data.bin"
            other.parent.mkdir()
            other.write_bytes(b"y" * 100)
            await seeder.publish([other])
            ambiguous = await trio.run_process([sys.executable, "-m", "chunkswarm", "get", "data.bin", "--state-dir", str(tmp_path / "g")],
                                               capture_stdout=True, capture_stderr=True, env=env, check=False)
            assert ambiguous.returncode != 0 and b"'data.bin' names 2 files that peers hold" in ambiguous.stderr
