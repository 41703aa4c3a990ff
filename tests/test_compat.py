"""Today's code against protocol 1 as first specified, as real processes (PROTOCOL.md §8.3).

The older side is the code of PROTOCOL_1_COMMIT itself, taken from this
repository's history with ``git archive`` and run from its own folder: an old
tracker with new peers, and old peers with a new tracker and new peers, each
exchanging a file over 127.0.0.1. The byte-level vectors of the same rules
are in tests/test_handshake.py.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import subprocess
import tarfile
from collections.abc import Iterator

import pytest
import trio

from tests.procs import ROOT, Child, spawn, start_tracker
from tests.test_gateway_swarm import curl

pytestmark = pytest.mark.slow

#: The last commit of protocol 1 as first specified (exact field counts, no capabilities).
PROTOCOL_1_COMMIT = "c24b91bcebb61cb54dbffea8f4a62a61198e3115"
CHUNK = 16 * 1024


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The packages of PROTOCOL_1_COMMIT in a folder of their own."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this repository's history (the older code is taken from it); tests/test_handshake.py covers the bytes")
    archive = subprocess.run([git, "archive", PROTOCOL_1_COMMIT, "common", "tracker", "peer", "chunkswarm"],
                             cwd=ROOT, capture_output=True, check=False)  # fmt: skip
    if archive.returncode != 0:
        pytest.skip(f"commit {PROTOCOL_1_COMMIT[:12]} is not in this clone (a shallow clone?): {archive.stderr.decode().strip()}")
    tree = tmp_path_factory.mktemp("protocol-1")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    yield tree


def _payload(path: pathlib.Path, size: int) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _peer(port: int, state: pathlib.Path, label: str) -> list[str]:
    return ["--tracker", f"127.0.0.1:{port}", "--state-dir", str(state), "--label", label]


async def _get(nursery: trio.Nursery, command: list[str], out: pathlib.Path, *, cwd: pathlib.Path = ROOT) -> Child:
    async with spawn(nursery, *command, "-o", f"{out}/", name=command[1], cwd=cwd) as getter:
        with trio.fail_after(30):
            code = await getter.wait_exit()
        assert code == 0, getter.text
        return getter


async def test_new_peers_swarm_through_an_old_tracker(old_tree: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = _payload(tmp_path / "src" / "a.bin", 5 * CHUNK + 7)
    async with trio.open_nursery() as nursery:
        async with spawn(nursery, "-m", "tracker", "--port", "0", "--db", str(tmp_path / "t.db"), name="old tracker", cwd=old_tree) as tracker:
            port = int((await tracker.wait_for(r"tracker listening on 127\.0\.0\.1:(\d+)")).group(1))
            # The new seeder runs an HTTP gateway (PROTOCOL.md §8.10): the old tracker cannot be told its port, and needs not be.
            async with spawn(nursery, "-m", "chunkswarm", "seed", str(tmp_path / "src"), "--chunk-size", str(CHUNK), "--http", "127.0.0.1:0",
                             *_peer(port, tmp_path / "s", "new-seeder"), name="new seeder") as seeder:  # fmt: skip
                with trio.fail_after(20):
                    url = (await seeder.wait_for(r"HTTP gateway on (http://\S+/files/)")).group(1)
                    await seeder.wait_for("seeding a.bin")
                await _get(nursery, ["-m", "chunkswarm", "get", "a.bin", *_peer(port, tmp_path / "g", "new-getter")], tmp_path / "out")
                status, _, body, _ = await curl(url + "a.bin")
                assert (status, body) == (200, data)
        nursery.cancel_scope.cancel()
    assert (tmp_path / "out" / "a.bin").read_bytes() == data


async def test_old_and_new_peers_swarm_through_a_new_tracker(old_tree: pathlib.Path, tmp_path: pathlib.Path) -> None:
    old_data = _payload(tmp_path / "old-src" / "old.bin", 4 * CHUNK + 3)
    new_data = _payload(tmp_path / "new-src" / "new.bin", 3 * CHUNK + 11)
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port):
            async with spawn(nursery, "-m", "peer", "seed", str(tmp_path / "old-src"), "--chunk-size", str(CHUNK),
                             *_peer(port, tmp_path / "os", "old-seeder"), name="old seeder", cwd=old_tree) as old_seeder, \
                       spawn(nursery, "-m", "chunkswarm", "seed", str(tmp_path / "new-src"), "--chunk-size", str(CHUNK),
                             *_peer(port, tmp_path / "ns", "new-seeder"), name="new seeder") as new_seeder:  # fmt: skip
                with trio.fail_after(20):
                    await old_seeder.wait_for("seeding old.bin")
                    await new_seeder.wait_for("seeding new.bin")
                # A new downloader says HELLO to an old chunk server, an old one to a new chunk server.
                await _get(nursery, ["-m", "chunkswarm", "get", "old.bin", *_peer(port, tmp_path / "ng", "new-getter")], tmp_path / "new-out")
                await _get(nursery, ["-m", "peer", "get", "new.bin", *_peer(port, tmp_path / "og", "old-getter")], tmp_path / "old-out",
                           cwd=old_tree)  # fmt: skip
        nursery.cancel_scope.cancel()
    assert (tmp_path / "new-out" / "old.bin").read_bytes() == old_data
    assert (tmp_path / "old-out" / "new.bin").read_bytes() == new_data
