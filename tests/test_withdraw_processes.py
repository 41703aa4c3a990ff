"""The catalogue tells the truth, as users run chunkswarm: real processes (``python -m chunkswarm tracker|seed``).

A seeder whose file is edited, and one that is SIGKILLed, leave WHO_HAS within
3 s (PROTOCOL.md §8.5), as a query-only client (HELLO, never REGISTER) sees it.
"""

from __future__ import annotations

import os
import pathlib

import pytest
import trio

from common.manifest import Manifest, build_manifest
from common.messages import Holders, WhoHas
from tests.procs import peer_args, spawn, start_tracker
from tests.tracker_client_helper import TrackerTestClient, open_client

#: A withdrawn or vanished seeder is gone from WHO_HAS within this (the only timed bound here).
BOUND = 3.0
#: Generous bounds for starting processes: a test that hits one has failed.
STARTUP = 30


async def _listed(asker: TrackerTestClient, manifest: Manifest) -> bool:
    reply = await asker.request(WhoHas(manifest.file_id))
    assert isinstance(reply, Holders), reply
    return bool(reply.holders)


async def _gone(asker: TrackerTestClient, manifest: Manifest) -> None:
    with trio.fail_after(BOUND):
        while await _listed(asker, manifest):
            await trio.sleep(0.05)


@pytest.mark.parametrize("how", ["edited", "killed"])
async def test_a_seeder_that_stops_serving_leaves_who_has(tmp_path: pathlib.Path, how: str) -> None:
    source = tmp_path / "src" / "song.ogg"
    source.parent.mkdir()
    source.write_bytes(os.urandom(300_000))
    manifest = build_manifest(source)  # the chunk size every publisher uses: seed's too
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port):
            async with spawn(nursery, "-m", "chunkswarm", "seed", str(source), *peer_args(port, tmp_path / "s", "seeder"), name="seeder") as seeder:
                with trio.fail_after(STARTUP):
                    await seeder.wait_for(f"seeding song.ogg \\({manifest.hex_id[:16]}")
                    asker = await open_client("127.0.0.1", port)
                    await asker.hello()
                assert await _listed(asker, manifest)
                if how == "edited":
                    with source.open("r+b") as handle:
                        handle.write(b"an edit")  # same size: only the modification time tells
                else:
                    seeder.kill()
                await _gone(asker, manifest)
                if how == "edited":
                    with trio.fail_after(STARTUP):
                        await seeder.wait_for("song.ogg changed on disk: no longer serving it")
                    assert seeder.process.poll() is None  # still running, still registered
                await asker.aclose()
        nursery.cancel_scope.cancel()
