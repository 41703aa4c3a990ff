"""Failover: peers given several trackers of one swarm move to the next when the one in use dies."""

from __future__ import annotations

import json
import os
import pathlib
import signal

import click
import pytest
import trio

from chunkswarm.peer_options import parse_trackers, tracker_settings
from common.manifest import build_manifest
from common.messages import Holders, WhoHas
from tests.procs import spawn, start_tracker
from tests.state_backends import RedisServer
from tests.tracker_client_helper import open_client

SIZE = 256 * 1024 * 1024


def test_trackers_are_given_again_or_as_a_list() -> None:
    parse = lambda *values: parse_trackers(click.Context(click.Command("x")), click.Option(["--tracker"]), values)  # noqa: E731
    assert parse("a:1", "b") == (("a", 1), ("b", 7070))
    assert parse("a:1, b:2 c:3") == (("a", 1), ("b", 2), ("c", 3))  # CHUNKSWARM_TRACKER="a:1, b:2 c:3"
    assert parse("a:1", "a:1") == (("a", 1),)
    assert tracker_settings(parse("a:1,b:2")) == {"tracker": ("a", 1), "fallback_trackers": (("b", 2),)}
    with pytest.raises(click.BadParameter):
        parse(" , ")


@pytest.mark.slow
async def test_a_download_survives_the_death_of_its_tracker(
    nursery: trio.Nursery, redis_server: RedisServer, tmp_path: pathlib.Path
) -> None:
    redis_server.command(b"FLUSHALL")
    source = tmp_path / "src" / "big.bin"
    source.parent.mkdir()
    with source.open("wb") as out:
        for _ in range(SIZE // (16 * 1024 * 1024)):
            out.write(os.urandom(16 * 1024 * 1024))
    manifest = build_manifest(source)
    shared = ("--state", redis_server.url(2), "--heartbeat-interval", "1")
    with trio.fail_after(240):
        async with start_tracker(nursery, tmp_path / "a.db", *shared) as (tracker_a, port_a), \
                start_tracker(nursery, tmp_path / "b.db", *shared) as (_, port_b):  # fmt: skip
            trackers = ["--tracker", f"127.0.0.1:{port_a}", "--tracker", f"127.0.0.1:{port_b}"]
            seed_args = ["-m", "chunkswarm", "seed", str(source), *trackers, "--state-dir", str(tmp_path / "s"), "--label", "seeder"]
            async with spawn(nursery, *seed_args, name="seeder") as seeder:
                await seeder.wait_for("seeding big.bin")
                out = tmp_path / "out"
                state_file = out / "big.bin.part.state"
                get_args = ["-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", *trackers, "--state-dir", str(tmp_path / "g"),
                            "--label", "getter", "--log-level", "INFO"]  # fmt: skip
                # At low priority, so the download is still under way when the tracker dies.
                async with spawn(nursery, *get_args, name="getter", nice=19) as getter:
                    while True:  # some chunks in, not all: kill the tracker in use
                        await trio.sleep(0.01)
                        try:
                            done = json.loads(state_file.read_text())["done"]
                        except (OSError, ValueError, KeyError):
                            continue
                        if done:
                            assert done != [[0, manifest.chunk_count]], "the download ended before the tracker could be killed"
                            break
                    tracker_a.process.send_signal(signal.SIGKILL)
                    assert await getter.wait_exit() == 0, getter.text
                assert (out / "big.bin").read_bytes() == source.read_bytes()
                moved = f"moved to the tracker at 127.0.0.1:{port_b}"
                await seeder.wait_for_text(moved)
                assert moved in getter.text, getter.text
                # The seeder heartbeats at B: still listed there after a peer timeout (3 s) and more.
                await trio.sleep(4)
                asker = await open_client("127.0.0.1", port_b)
                await asker.hello()
                reply = await asker.request(WhoHas(manifest.file_id, 10))
                assert isinstance(reply, Holders) and len(reply.holders) == 1, reply
