"""One id per content: ``seed``, the shell (``demo_peer.py``) and the demo (``demo.py``) publish a file under the same id.

Each as a user runs it (real processes); every publisher cuts a file with
``chunk_size_for`` its size (PROTOCOL.md §4.4) unless told otherwise.
"""

from __future__ import annotations

import os
import pathlib
import re
import sys

import trio

from common.manifest import build_manifest
from tests.procs import ROOT, peer_args, spawn, start_tracker

#: Generous bounds for starting processes: a test that hits one has failed.
STARTUP = 30


async def test_seed_the_shell_and_the_demo_publish_a_file_under_one_id(tmp_path: pathlib.Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    source = share / "gradient.bmp"  # 288 KiB: the old defaults gave it 1, 5 and 8 chunks
    source.write_bytes((ROOT / "sample_files" / "dir3" / "gradient.bmp").read_bytes())
    expected = build_manifest(source).hex_id
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port):
            async with spawn(nursery, "-m", "chunkswarm", "seed", str(source), *peer_args(port, tmp_path / "s", "seeder"), name="seeder") as seeder:
                with trio.fail_after(STARTUP):
                    seeded = (await seeder.wait_for(r"seeding gradient\.bmp \((\w+)")).group(1)
            with trio.fail_after(STARTUP):
                shell = await trio.run_process(
                    [sys.executable, str(ROOT / "demo_peer.py"), "--tracker", f"127.0.0.1:{port}", "--share-dir", str(share),
                     "--download-dir", str(tmp_path / "got"), "--state-dir", str(tmp_path / "shell")],
                    stdin=b"c\nu\n", capture_stdout=True, capture_stderr=True,
                )  # fmt: skip
            published = re.search(r"published gradient\.bmp \(.*, id (\w+)\)", shell.stdout.decode())
            assert published is not None, shell.stdout + shell.stderr
        with trio.fail_after(STARTUP):
            demo = await trio.run_process([sys.executable, str(ROOT / "demo.py"), "--file", str(source)], cwd=tmp_path,
                                          capture_stdout=True, capture_stderr=True, env={**os.environ, "COLUMNS": "250"})  # fmt: skip
        demo_log = re.sub(r"\s+", " ", (demo.stdout + demo.stderr).decode(errors="replace"))  # rich wraps long lines
        demoed = re.search(r"publishing \S*gradient\.bmp \([0-9.]+ \w+, \d+ chunks?, id (\w+)\)", demo_log)
        assert demoed is not None, demo_log
        nursery.cancel_scope.cancel()
    assert expected.startswith(seeded) and expected.startswith(published.group(1)) and expected.startswith(demoed.group(1))
