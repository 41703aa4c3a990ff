"""The peer's HTTP gateway (peer/gateway/) in a swarm: the tracker learns its port, a lying holder's chunk is never sent,
the cap on requests, and a client that stops reading stalls nothing else.

The tracker and the peers run in this process over 127.0.0.1 (so their timeouts can be short); the
lying holder is ``tests/liar_peer.py``, a process; the HTTP clients are curl and raw sockets.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from common.allow import AllowList, parse_ranges
from common.errors import ValidationError
from common.manifest import build_manifest
from common.messages import Hello, Ok, Register
from common.swarm import SwarmFile
from peer.config import PeerConfig
from peer.connection import Connection
from peer.gateway import GatewayConfig, serve_gateway
from peer.node import Peer, open_peer
from peer.tasks import open_nursery
from tests.procs import spawn
from tests.system import program
from tests.test_peer_swarm import CHUNK, Swarm, offer
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

pytestmark = pytest.mark.slow


@pytest.fixture
async def running(nursery: trio.Nursery) -> RunningTracker:
    return await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, heartbeat_interval=1.0, peer_timeout=3.0))


async def curl(url: str, *options: str) -> tuple[int, dict[str, str], bytes, int]:
    """``curl`` of ``url``: its status, response headers (lower-case names), body and exit code (18: body cut short)."""
    result = await trio.run_process([program("curl"), "-sS", "--max-time", "60", "-D", "/dev/stderr", "-o", "-", *options, url],
                                    capture_stdout=True, capture_stderr=True, check=False)  # fmt: skip
    lines = result.stderr.decode(errors="replace").splitlines()
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if ":" in line)}
    return status, headers, result.stdout, result.returncode


@asynccontextmanager
async def gateway(peer: Peer, folder: pathlib.Path, **limits: object) -> AsyncIterator[tuple[str, int]]:
    """``peer``'s gateway on a free port, until the block ends."""
    async with open_nursery() as nursery:
        address = await nursery.start(serve_gateway, peer, GatewayConfig(folder, **limits))  # type: ignore[arg-type]
        yield address
        nursery.cancel_scope.cancel()


async def test_the_tracker_knows_each_gateway_port_and_only_where_agreed(tmp_path: pathlib.Path, running: RunningTracker) -> None:
    tracker = (running.host, running.port)
    registry = running.service.registry
    swarm = Swarm(tracker, tmp_path)
    with trio.fail_after(30):
        async with swarm.peer() as plain, swarm.peer() as served:
            assert registry.get_peer(plain.peer_id).http_port is None  # type: ignore[union-attr]
            async with gateway(served, tmp_path / "gw") as (_, port):
                assert registry.get_peer(served.peer_id).http_port == port  # type: ignore[union-attr]  # told at once: it was connected
                await served.disconnect()
                assert registry.get_peer(served.peer_id) is None
                await served.connect()  # a new REGISTER says it again
                assert registry.get_peer(served.peer_id).http_port == port  # type: ignore[union-attr]
        # A REGISTER with the field on a connection that did not agree on gateway is read as one without it (PROTOCOL.md §8.10).
        conn = Connection(await trio.open_tcp_stream(*tracker))
        try:
            await conn.send(Hello(b"h" * 20, 6881))
            await conn.receive()
            await conn.send(Register(6881, 8080))
            assert isinstance(await conn.receive(), Ok)
            assert registry.get_peer(b"h" * 20).http_port is None  # type: ignore[union-attr]
        finally:
            await conn.aclose()


async def test_a_corrupt_chunk_is_never_sent_and_the_response_is_cut_where_the_swarm_fails(
    tmp_path: pathlib.Path, running: RunningTracker
) -> None:
    """An honest peer holds the first 5 chunks only; a liar holds every chunk and flips a byte in each it sends.

    The gateway streams the 5 verified chunks in order, then, when no holder can give chunk 6, ends the
    response short of its Content-Length: the client holds exactly the true first 5 chunks, no byte of the liar's.
    """
    path = tmp_path / "src" / "lied.bin"
    path.parent.mkdir()
    data = os.urandom(12 * CHUNK + 123)
    path.write_bytes(data)
    manifest = build_manifest(path, CHUNK)
    tracker = (running.host, running.port)
    swarm = Swarm(tracker, tmp_path)
    async with trio.open_nursery() as procs:
        async with spawn(procs, "-m", "tests.liar_peer", str(path), "--tracker", f"{running.host}:{running.port}", "--chunk-size", str(CHUNK),
                         "--mode", "corrupt", name="liar") as liar:  # fmt: skip
            with trio.fail_after(60):
                await liar.wait_for("liar announced")
                async with swarm.peer() as honest, swarm.peer(stall_timeout=2.0, request_timeout=2.0) as fetcher:
                    await offer(honest, path, manifest, range(5))
                    async with gateway(fetcher, tmp_path / "gw") as (host, port):
                        status, headers, body, code = await curl(f"http://{host}:{port}/files/lied.bin")
                        assert status == 200 and int(headers["content-length"]) == len(data)
                        assert code == 18, code  # curl: "transfer closed with outstanding read data remaining"
                        assert body == data[: 5 * CHUNK]
                        # Nobody can deliver any of it: an error status before any byte, and a reason.
                        status, _, body, _ = await curl(f"http://{host}:{port}/files/lied.bin", "-r", f"{6 * CHUNK}-")
                        assert status == 503, (status, body)
                        assert "no reachable peer" in json.loads(body)["error"]
            procs.cancel_scope.cancel()


async def test_the_cap_on_requests_and_a_client_that_stops_reading(tmp_path: pathlib.Path, running: RunningTracker) -> None:
    """Two clients ask for a large file and read nothing: with a cap of 2 requests the next gets 503 with a reason; the
    peer's chunk server and downloads go on meanwhile, and the stalled clients are dropped after send_timeout."""
    path = tmp_path / "src" / "big.bin"
    path.parent.mkdir()
    data = os.urandom(64 * 1024 * 1024)
    path.write_bytes(data)
    swarm = Swarm((running.host, running.port), tmp_path)
    with trio.fail_after(60):
        async with swarm.peer() as holder, swarm.peer() as other:
            (manifest,) = await holder.publish([path])
            async with gateway(holder, tmp_path / "gw", max_requests=2, send_timeout=2.0) as (host, port):
                stalled: list[trio.SocketStream] = []
                try:
                    for query in (manifest.hex_id, "big.bin"):  # two clients that ask and read nothing: the cap is 2
                        stalled.append(await trio.open_tcp_stream(host, port))
                        await stalled[-1].send_all(f"GET /files/{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    await trio.sleep(0.5)  # the kernel's buffers fill; the gateway's tasks for them wait on their sockets
                    status, headers, body, _ = await curl(f"http://{host}:{port}/files/big.bin")
                    assert status == 503 and headers["retry-after"] == "1", (status, body)
                    assert "2 requests at once" in json.loads(body)["error"]
                    # The stalled client holds nothing else up: the chunk server serves the whole file meanwhile.
                    result = await other.download(manifest.hex_id, tmp_path / "out")
                    assert result.path.read_bytes() == data
                    # They still read nothing: each is dropped once nothing it was sent is acknowledged for send_timeout
                    # (TCP_USER_TIMEOUT, inherited from the listening socket), and its place comes back.
                    with trio.fail_after(30):
                        while (await curl(f"http://{host}:{port}/files/big.bin", "-r", "0-9"))[0] != 206:
                            await trio.sleep(0.1)
                finally:  # (a server that kept them would wait for them at its shutdown, its sends being shielded)
                    for stream in stalled:
                        await stream.aclose()


async def test_a_held_chunk_changed_on_disk_is_not_sent(tmp_path: pathlib.Path, running: RunningTracker) -> None:
    """A held file whose bytes change under the peer with its size and mtime kept (bit rot, a careless tool): the
    gateway sends the chunks before the changed one and stops there, and says why in the log."""
    path = tmp_path / "src" / "rot.bin"
    path.parent.mkdir()
    data = os.urandom(10 * CHUNK)
    path.write_bytes(data)
    swarm = Swarm((running.host, running.port), tmp_path)
    with trio.fail_after(30):
        async with swarm.peer() as holder:
            await holder.publish([path])
            stat = path.stat()
            with path.open("r+b") as handle:
                handle.seek(7 * CHUNK + 5)
                handle.write(bytes([data[7 * CHUNK + 5] ^ 1]))
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            async with gateway(holder, tmp_path / "gw") as (host, port):
                status, headers, body, code = await curl(f"http://{host}:{port}/files/rot.bin")
                assert (status, headers["content-length"], code) == (200, str(len(data)), 18)
                assert body == data[: 7 * CHUNK]


async def test_allow_ranges_and_private_swarms(tmp_path: pathlib.Path) -> None:
    """``--allow`` holds for HTTP clients as for peers (403 and a reason); a private swarm's gateway listens on loopback only."""
    with trio.fail_after(30):
        async with open_peer(PeerConfig(state_dir=tmp_path / "a", allow=AllowList(parse_ranges(["10.0.0.0/8"])))) as peer, \
                   gateway(peer, tmp_path / "gw") as (host, port):  # fmt: skip
            status, _, body, _ = await curl(f"http://{host}:{port}/files")
            assert status == 403 and "--allow" in json.loads(body)["error"]
        async with open_peer(PeerConfig(state_dir=tmp_path / "b", swarm=SwarmFile.create("office"))) as peer:
            with pytest.raises(ValidationError, match="loopback address only"):
                async with gateway(peer, tmp_path / "gw", host="0.0.0.0"):
                    pass
            async with gateway(peer, tmp_path / "gw") as (host, port):
                status, _, body, _ = await curl(f"http://{host}:{port}/files")
                assert status == 200 and json.loads(body) == {"files": []}
