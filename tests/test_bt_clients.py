"""Real BitTorrent clients through our tracker: a libtorrent seeder, an aria2c or libtorrent downloader, over HTTP and UDP.

The torrent is made by mktorrent of a random file; the bytes downloaded are
compared with it. Every program is Debian's (``tests/system.py`` finds them:
skipped locally, failed under CI, when one is missing). Waits are bounded.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import subprocess
import sys

import bencode2
import pytest
import trio

from tests.system import libtorrent_python, program
from tracker.bittorrent.settings import BitTorrentConfig
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

LT_PEER = pathlib.Path(__file__).with_name("lt_peer.py")
#: Seconds any one client may take: the swarm completes in a few on an idle machine.
CLIENT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_torrent(tmp_path: pathlib.Path, announce: str, size: int) -> tuple[pathlib.Path, bytes, bytes]:
    """A random file in ``tmp_path/seed``, its private torrent announcing to ``announce``, and the info-hash."""
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    data = os.urandom(size)
    (seed_dir / "data.bin").write_bytes(data)
    torrent = tmp_path / "data.torrent"
    subprocess.run([program("mktorrent"), "-a", announce, "-p", "-l", "16", "-o", str(torrent), str(seed_dir / "data.bin")],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    info = bencode2.bdecode(torrent.read_bytes())[b"info"]
    return torrent, data, hashlib.sha1(bencode2.bencode(info)).digest()


async def start_tracker(nursery: trio.Nursery) -> RunningTracker:
    config = TrackerConfig(port=0, bittorrent=BitTorrentConfig(http=("127.0.0.1", 0), udp=("127.0.0.1", 0)))
    running: RunningTracker = await nursery.start(serve_tracker, config)
    return running


def announce_url(running: RunningTracker, protocol: str) -> str:
    address = running.bittorrent.http if protocol == "http" else running.bittorrent.udp
    assert address is not None
    return f"{protocol}://127.0.0.1:{address[1]}/announce"


async def wait_for_seeders(running: RunningTracker, info_hash: bytes, seeder: subprocess.Popen[bytes]) -> None:
    """Until the seeder has announced itself complete (it hash-checks the file first)."""
    with trio.fail_after(CLIENT_SECONDS):
        while running.service.bittorrent.swarms.scrape(info_hash)[0] < 1:
            assert seeder.poll() is None, "the libtorrent seeder exited"
            await trio.sleep(0.1)


def spawn_seeder(torrent: pathlib.Path, save: pathlib.Path, log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([libtorrent_python(), str(LT_PEER), "seed", str(torrent), str(save), str(free_port()), str(CLIENT_SECONDS * 2)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


async def download_with_aria2(torrent: pathlib.Path, out: pathlib.Path) -> subprocess.CompletedProcess[bytes]:
    command = [
        program("aria2c"), f"--dir={out}", "--seed-time=0", "--bt-enable-lpd=false", "--enable-dht=false", "--enable-dht6=false",
        "--enable-peer-exchange=false", "--disable-ipv6=true", f"--listen-port={free_port()}", "--file-allocation=none",
        f"--bt-stop-timeout={CLIENT_SECONDS}", "--summary-interval=0", "--console-log-level=notice", str(torrent),
    ]  # fmt: skip
    with trio.fail_after(CLIENT_SECONDS + 10):
        return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


async def download_with_libtorrent(torrent: pathlib.Path, out: pathlib.Path) -> subprocess.CompletedProcess[bytes]:
    out.mkdir()
    command = [libtorrent_python(), str(LT_PEER), "leech", str(torrent), str(out), str(free_port()), str(CLIENT_SECONDS)]
    with trio.fail_after(CLIENT_SECONDS + 10):
        return await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


@pytest.mark.slow
# aria2c announces over UDP only through its DHT socket ("udp is not supported yet" with DHT off), so UDP is libtorrent's.
@pytest.mark.parametrize(("protocol", "downloader"), [("http", "aria2c"), ("http", "libtorrent"), ("udp", "libtorrent")])
async def test_a_real_swarm_completes_through_our_tracker(
    nursery: trio.Nursery, tmp_path: pathlib.Path, protocol: str, downloader: str
) -> None:
    running = await start_tracker(nursery)
    torrent, data, info_hash = make_torrent(tmp_path, announce_url(running, protocol), 3 * 1024 * 1024 + 12345)
    seeder = spawn_seeder(torrent, tmp_path / "seed", tmp_path / "seeder.log")
    try:
        await wait_for_seeders(running, info_hash, seeder)
        out = tmp_path / "out"
        done = await (download_with_aria2 if downloader == "aria2c" else download_with_libtorrent)(torrent, out)
        log = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"{downloader} failed:\n{log[-3000:]}\nseeder:\n{(tmp_path / 'seeder.log').read_text()[-2000:]}"
        assert (out / "data.bin").read_bytes() == data
        # The tracker counted the completed download (libtorrent says completed; aria2c, leaving at once, stopped with nothing left).
        complete, downloaded, _ = running.service.bittorrent.swarms.scrape(info_hash)
        assert downloaded >= 1 and complete >= 1
    finally:
        seeder.kill()
        seeder.wait(10)


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("the real BitTorrent clients (libtorrent, aria2, opentracker) come from Debian's packages: Linux only")
