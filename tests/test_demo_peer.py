"""demo_peer.py driven through a pipe against a real tracker and a real seeding peer (all subprocesses)."""

from __future__ import annotations

import contextlib
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from common.manifest import build_manifest
from peer.storage.download_lock import DownloadLock
from tests.test_peer_processes import Child

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDED = ROOT / "sample_files" / "dir3"
CHUNK = 4096


@asynccontextmanager
async def start(nursery: trio.Nursery, *args: str) -> AsyncIterator[Child]:
    """A ``python -m ...`` subprocess whose stderr (the log) is collected; killed on the way out."""
    process = await trio.lowlevel.open_process(
        [sys.executable, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    child = Child(process)
    nursery.start_soon(child.drain)
    try:
        yield child
    finally:
        child.kill()
        with trio.move_on_after(5):
            await process.wait()


@pytest.fixture
async def seeded_tracker(nursery: trio.Nursery, tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """A tracker subprocess and a ``python -m chunkswarm seed`` of sample_files/dir3; yields HOST:PORT."""
    with trio.fail_after(15):
        async with start(nursery, "-m", "chunkswarm", "tracker", "--port", "0", "--db", str(tmp_path / "tracker.db"), "--heartbeat-interval", "1") as tracker:
            await tracker.wait_for("tracker listening on")
            match = re.search(rb"tracker listening on (127\.0\.0\.1:\d+)", tracker.output)
            assert match is not None, tracker.output
            address = match.group(1).decode()
            async with start(nursery, "-m", "chunkswarm", "seed", str(SEEDED), "--tracker", address, "--chunk-size", str(CHUNK),
                             "--state-dir", str(tmp_path / "seeder"), "--label", "seeder") as seeder:  # fmt: skip
                await seeder.wait_for("seeding gradient.bmp")
                await seeder.wait_for("seeding file1_dir3.txt")
                yield address


async def shell(tmp_path: pathlib.Path, tracker: str, script: str) -> tuple[int, list[str], str]:
    """Run demo_peer.py with ``script`` on its stdin; (exit status, stdout lines, stderr)."""
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, str(ROOT / "demo_peer.py"), "--tracker", tracker, "--share-dir", str(ROOT / "sample_files" / "dir2"),
             "--download-dir", str(tmp_path / "downloads"), "--state-dir", str(tmp_path / "shell"), "--label", "tester"],
            stdin=script.encode(), capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    return result.returncode, result.stdout.decode().splitlines(), result.stderr.decode()


def line_after(lines: list[str], start: str) -> str:
    """The first line that starts with ``start``."""
    for line in lines:
        if line.startswith(start):
            return line
    raise AssertionError(f"no line starts with {start!r} in:\n" + "\n".join(lines))


async def test_session_through_a_pipe(seeded_tracker: str, tmp_path: pathlib.Path) -> None:
    small = build_manifest(SEEDED / "file1_dir3.txt", CHUNK)
    script = "\n".join([
        "u",                        # before c: explained
        "zz",                       # unknown command
        "c",
        "c",                        # twice: said so
        "u",                        # publishes sample_files/dir2
        "f",
        "d gradient.bmp",
        "d nope.bin",               # no such file
        "d",                        # asks for the name ...
        small.hex_id[:10],          # ... given as an id prefix
        "s",
        "h",
    ]) + "\n"  # fmt: skip
    status, lines, log = await shell(tmp_path, seeded_tracker, script)
    text = "\n".join(lines)
    assert status == 0, text + log
    assert f"created {tmp_path / 'shell'}: the peer keeps its state there" in " ".join(log.split())  # said on first use
    assert line_after(lines, "not connected to the tracker") == "not connected to the tracker: type c to connect before uploading"
    assert "unknown command 'zz': type h for help" in lines
    assert line_after(lines, "connected to the tracker").startswith(f"connected to the tracker at {seeded_tracker} as tester")
    assert f"already connected to the tracker at {seeded_tracker}" in lines
    assert line_after(lines, "published file1_dir2.txt").startswith("published file1_dir2.txt (723 B, 1 chunk, id ")
    assert line_after(lines, "uploaded 2 files").startswith("uploaded 2 files from ")
    # The listing: the seeder's files and ours, with sizes, id prefixes and holders.
    table = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]] for line in lines if line.startswith("│")}
    assert table["gradient.bmp"][:3] == ["288.1 KiB", build_manifest(SEEDED / "gradient.bmp", CHUNK).hex_id[:12], "73\u00d74 KiB"]
    assert table["file1_dir2.txt"][3] == "1" and set(table) == {"gradient.bmp", "file1_dir3.txt", "file1_dir2.txt", "file2_dir2.txt"}
    saved = line_after(lines, "saved gradient.bmp")
    assert f"to {tmp_path / 'downloads' / 'gradient.bmp'} " in saved and "(73 chunks from seeder: 73)" in saved
    assert saved.endswith("now serving it")
    assert (tmp_path / "downloads" / "gradient.bmp").read_bytes() == (SEEDED / "gradient.bmp").read_bytes()
    assert "error: no file named 'nope.bin' or with an id starting with 'nope.bin' on the tracker" in lines
    assert line_after(lines, "saved file1_dir3.txt").startswith("saved file1_dir3.txt (111 B) to ")
    assert (tmp_path / "downloads" / "file1_dir3.txt").read_bytes() == (SEEDED / "file1_dir3.txt").read_bytes()
    assert line_after(lines, "tester: connected").startswith(f"tester: connected to the tracker at {seeded_tracker}; serving chunks on 127.0.0.1:")
    assert "files held: 4" in lines and line_after(lines, "  gradient.bmp").startswith("  gradient.bmp  73/73 chunks  id ")
    assert line_after(lines, "transfers:").startswith("transfers: uploaded 0 chunks (0 B) to 0 peers, downloaded 74 chunks (288.2 KiB) from 1 peer;")
    assert "commands:" in lines
    # End of input: deregistered, status 0.
    assert lines[-1] == "bye: deregistered from the tracker, tester stopped"


async def test_disconnect_reconnect_and_exit_command(seeded_tracker: str, tmp_path: pathlib.Path) -> None:
    status, lines, log = await shell(tmp_path, seeded_tracker, "c\nq\nf\ns\nq\nc\nf gradient\nx\nthis line is never read\n")
    assert status == 0, "\n".join(lines) + log
    assert lines.count(f"disconnected from the tracker at {seeded_tracker}; still serving chunks (c connects again)") == 1
    assert "not connected to the tracker: type c to connect before listing files" in lines
    assert line_after(lines, "tester: not connected to the tracker at")
    assert "not connected to the tracker" in lines  # the second q
    assert len([line for line in lines if line.startswith("connected to the tracker")]) == 2
    assert "1 file on the network" in "\n".join(lines)
    assert lines[-1] == "bye: deregistered from the tracker, tester stopped"


async def test_tracker_down_is_explained_and_the_shell_goes_on(tmp_path: pathlib.Path) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    status, lines, log = await shell(tmp_path, "127.0.0.1:1", "c\nd gradient.bmp\nh\n")
    assert status == 0, "\n".join(lines) + log
    assert line_after(lines, "error: tracker at 127.0.0.1:1 unreachable")
    assert "not connected to the tracker: type c to connect before downloading" in lines
    assert "commands:" in lines
    assert lines[-1] == "bye: tester stopped"


async def test_ctrl_c_cancels_a_download_and_keeps_its_part_file(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(30):
        async with contextlib.AsyncExitStack() as stack, start(nursery, "-m", "chunkswarm", "tracker", "--port", "0", "--db", str(tmp_path / "tracker.db"), "--heartbeat-interval", "1") as tracker:
            await tracker.wait_for("tracker listening on")
            match = re.search(rb"tracker listening on (127\.0\.0\.1:\d+)", tracker.output)
            assert match is not None
            address = match.group(1).decode()
            seed = ["-m", "chunkswarm", "seed", str(SEEDED), "--tracker", address, "--chunk-size", str(CHUNK), "--state-dir", str(tmp_path / "seeder")]
            frozen = await stack.enter_async_context(start(nursery, *seed))
            await frozen.wait_for("seeding gradient.bmp")
            # Frozen, not gone: its connection stays open, so the tracker lists it until its heartbeats
            # have been missing for a peer timeout (3 s here): the download starts, and waits for it.
            frozen.signal(signal.SIGSTOP)
            process = await trio.lowlevel.open_process(
                [sys.executable, str(ROOT / "demo_peer.py"), "--tracker", address, "--download-dir", str(tmp_path / "downloads"),
                 "--state-dir", str(tmp_path / "shell")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            assert process.stdin is not None and process.stdout is not None
            output = bytearray()

            async def read_until(text: str) -> None:
                assert process.stdout is not None
                while text.encode() not in output:
                    data = await process.stdout.receive_some(65536)
                    assert data, f"demo_peer.py ended before {text!r}:\n{output.decode()}"
                    output.extend(data)

            try:
                await process.stdin.send_all(b"c\nd gradient.bmp\n")
                part = tmp_path / "downloads" / "gradient.bmp.part"
                while not part.exists():
                    await trio.sleep(0.05)
                process.send_signal(signal.SIGINT)
                await read_until("download of gradient.bmp cancelled; the part file is kept in")
                assert part.exists()
                frozen.kill()
                async with start(nursery, *seed):
                    await process.stdin.send_all(b"d gradient.bmp\n")
                    await read_until("saved gradient.bmp")
                    await process.stdin.aclose()
                    assert await process.wait() == 0
            finally:
                frozen.kill()
                if process.poll() is None:
                    process.kill()
    assert (tmp_path / "downloads" / "gradient.bmp").read_bytes() == (SEEDED / "gradient.bmp").read_bytes()
    assert not part.exists()


async def test_d_refuses_a_file_another_download_is_writing(seeded_tracker: str, tmp_path: pathlib.Path) -> None:
    # Another process (this test) downloads gradient.bmp into the same folder: it holds the lock.
    lock = DownloadLock(tmp_path / "downloads" / "gradient.bmp")
    lock.acquire()
    try:
        status, lines, log = await shell(tmp_path, seeded_tracker, "c\nd gradient.bmp\nd file1_dir3.txt\n")
    finally:
        lock.release()
    assert status == 0, "\n".join(lines) + log
    refused = line_after(lines, "error: another get is already downloading gradient.bmp")
    assert f"it holds the lock {lock.path}" in refused
    assert sorted(p.name for p in (tmp_path / "downloads").iterdir()) == ["file1_dir3.txt"]  # the other file came; nothing touched


async def test_r_unpublishes_what_this_node_published_and_nothing_else(seeded_tracker: str, tmp_path: pathlib.Path) -> None:
    mine = sorted(p.name for p in (ROOT / "sample_files" / "dir2").iterdir())[0]
    script = "\n".join(["c", "u", f"r {mine}", "r gradient.bmp", f"f {mine}", "r", "x"]) + "\n"
    status, lines, stderr = await shell(tmp_path, seeded_tracker, script)
    assert status == 0, stderr
    assert line_after(lines, f"unpublished {mine} ").endswith("; no longer serving it here")
    assert "did not publish 'gradient.bmp': only its publishers may unpublish it" in line_after(lines, "error:")
    assert line_after(lines, "no files on the network") == f"no files on the network with {mine!r} in their name"
    assert line_after(lines, "r takes").startswith("r takes the name or id prefix")
    # The same state folder, later: the same node, so what it published it can still take back.
    status, lines, stderr = await shell(tmp_path, seeded_tracker, "c\nu\nx\n")
    assert status == 0, stderr
    status, lines, stderr = await shell(tmp_path, seeded_tracker, f"c\nr {mine}\nx\n")
    assert status == 0, stderr
    assert line_after(lines, f"unpublished {mine} ")


async def test_a_second_process_on_one_state_folder_runs_as_another_node(tmp_path: pathlib.Path) -> None:
    from chunkswarm.node_key import claim_node_key

    first = claim_node_key(tmp_path)
    assert claim_node_key(tmp_path).node_id != first.node_id  # the lock is held: a fresh key for this claim
    script = "import pathlib, sys; from chunkswarm.node_key import claim_node_key; print(claim_node_key(pathlib.Path(sys.argv[1])).display)"
    other = await trio.run_process([sys.executable, "-c", script, str(tmp_path)], capture_stdout=True, capture_stderr=True)
    assert other.stdout.decode().strip() != first.display
    assert b"another process runs as node" in other.stderr


async def test_http_serves_files_from_the_swarm_beside_the_shell(seeded_tracker: str, tmp_path: pathlib.Path) -> None:
    """``demo_peer.py --http``: the shell says where its gateway is, which fetches a file from the swarm into the download folder."""
    from tests.test_gateway_swarm import curl

    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "demo_peer.py"), "--tracker", seeded_tracker, "--download-dir", str(tmp_path / "downloads"),
         "--state-dir", str(tmp_path / "shell"), "--http", "127.0.0.1:0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    output = bytearray()
    try:
        with trio.fail_after(30):
            await process.stdin.send_all(b"c\n")
            while (found := re.search(rb"serving files over HTTP: (http://127\.0\.0\.1:\d+/files/)NAME", output)) is None or b"connected" not in output:
                data = await process.stdout.receive_some(65536)
                assert data, output.decode()
                output.extend(data)
            status, _, body, _ = await curl(found.group(1).decode() + "gradient.bmp")
            assert (status, body) == (200, (SEEDED / "gradient.bmp").read_bytes())
            while not (tmp_path / "downloads" / "gradient.bmp").exists():  # the download puts it in place after the last chunk
                await trio.sleep(0.05)
            await process.stdin.aclose()
            assert await process.wait() == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert (tmp_path / "downloads" / "gradient.bmp").read_bytes() == (SEEDED / "gradient.bmp").read_bytes()
