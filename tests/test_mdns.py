"""LAN discovery across two network namespaces joined by a veth pair: a tracker advertised by mDNS in one, ``ls`` without
``--tracker`` in the other finds it (tracker/mdns.py, peer/discovery.py, chunkswarm/discover.py)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from peer.discovery import FoundTracker, choose
from tests.procs import ROOT, Child
from tests.system import program

SUBNET = "10.213.0"


def _ip(*args: str) -> None:
    subprocess.run([program("ip"), *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    """Two fresh network namespaces (names unique to this run) joined by a veth pair; always deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the test creates network namespaces and a veth pair with `ip netns` (run the tests as root)")
    tag = uuid.uuid4().hex[:6]
    tracker_ns, peer_ns = f"cs-{tag}-t", f"cs-{tag}-p"
    created: list[str] = []
    try:
        for name in (tracker_ns, peer_ns):
            _ip("netns", "add", name)
            created.append(name)
        _ip("link", "add", f"cs{tag}t", "netns", tracker_ns, "type", "veth", "peer", "name", f"cs{tag}p", "netns", peer_ns)
        for number, (name, device) in enumerate(((tracker_ns, f"cs{tag}t"), (peer_ns, f"cs{tag}p")), 1):
            _ip("-n", name, "addr", "add", f"{SUBNET}.{number}/24", "dev", device)
            _ip("-n", name, "link", "set", device, "up", "multicast", "on")
            _ip("-n", name, "link", "set", "lo", "up")
        yield tracker_ns, peer_ns
    finally:
        for name in created:  # deleting a namespace deletes its end of the veth pair, and so the pair
            subprocess.run([program("ip"), "netns", "del", name], check=False, capture_output=True, timeout=30)


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key != "CHUNKSWARM_TRACKER"}
    return {**environment, "COLUMNS": "250", "PYTHONPATH": str(ROOT)}


@asynccontextmanager
async def _tracker(nursery: trio.Nursery, namespace: str, db: pathlib.Path, *extra: str) -> AsyncIterator[Child]:
    process = await trio.lowlevel.open_process(
        [program("ip"), "netns", "exec", namespace, sys.executable, "-m", "chunkswarm", "tracker", "--host", "*", "--port", "0",
         "--db", str(db), *extra],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=_environment(),
    )  # fmt: skip
    child = Child(process, "tracker")
    nursery.start_soon(child.drain)
    try:
        yield child
    finally:
        child.signal(15)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        child.kill()


async def _ls(namespace: str) -> subprocess.CompletedProcess[str]:
    command = [program("ip"), "netns", "exec", namespace, sys.executable, "-m", "chunkswarm", "ls"]
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=_environment(), check=False)
    )


@pytest.mark.slow
async def test_a_peer_without_tracker_finds_the_one_advertised_on_the_lan(namespaces: tuple[str, str], tmp_path: pathlib.Path) -> None:
    tracker_ns, peer_ns = namespaces
    async with trio.open_nursery() as nursery:
        async with _tracker(nursery, tracker_ns, tmp_path / "t.db") as tracker:
            port = int((await tracker.wait_for(r"tracker listening on \S+:(\d+)")).group(1))
            advertised = await tracker.wait_for(r"advertised by mDNS as '(chunkswarm tracker \w+)'")
            listed = await _ls(peer_ns)
            assert listed.returncode == 0, listed.stderr
            assert f"found a tracker on the LAN: {advertised.group(1)} at {SUBNET}.1:{port}" in listed.stderr, listed.stderr
            assert "open)" in listed.stderr and f"files on {SUBNET}.1:{port}" in listed.stdout
        # Not advertised: nothing to find, and ls says so (then fails to reach the fallback address).
        async with _tracker(nursery, tracker_ns, tmp_path / "t.db", "--no-mdns") as tracker:
            await tracker.wait_for(r"tracker listening on")
            listed = await _ls(peer_ns)
            assert listed.returncode != 0 and "no tracker answered on the LAN" in listed.stderr, listed.stderr
        nursery.cancel_scope.cancel()


def test_the_choice_among_several_trackers() -> None:
    open_one, other, private = (FoundTracker("a", "10.0.0.1", 1, "N", False), FoundTracker("b", "10.0.0.2", 2, "M", False),
                                FoundTracker("c", "10.0.0.3", 3, "P", True))  # fmt: skip
    assert choose([], private=False) is None
    assert choose([private, open_one, other], private=False) == open_one
    assert choose([open_one, private], private=True) == private
    assert choose([private], private=False) == private  # the only one: tried, and its refusal says why
