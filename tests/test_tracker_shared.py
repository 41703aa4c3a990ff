"""Several trackers on one Redis (``--state``, ``tracker.shared``) serve one swarm.

Two trackers in one trio run each keep their own replica and their own Redis
connection, exactly as two processes do; one test runs two real
``chunkswarm tracker`` processes. Changes reach the other tracker a round
trip or two later, so each check polls (bounded by a generous ``fail_after``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import re
from collections.abc import Awaitable, Callable, Iterator

import attrs
import pytest
import trio

from common.capabilities import UNPUBLISH, WITHDRAW
from common.errors import StorageError
from common.framing import ErrorCode
from common.identity import NodeKey
from common.manifest import Manifest
from common.messages import (
    Announce,
    Deregister,
    Error,
    FileList,
    GetManifest,
    Heartbeat,
    Hello,
    Holders,
    ListFiles,
    ManifestReply,
    Message,
    Ok,
    Publish,
    Published,
    Register,
    Unpublish,
    WhoHas,
    Withdraw,
)
from peer.connection import Connection
from peer.greeting import connect_tcp, open_greeted
from tests.procs import start_tracker
from tests.state_backends import RedisServer, run_redis
from tests.tracker_client_helper import TrackerTestClient, make_manifest, open_client
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

#: Generous: a change reaches the other tracker in milliseconds; a loaded 2-core machine may take longer.
TIMEOUT = 20.0
CONFIG = TrackerConfig(port=0, heartbeat_interval=1.0, peer_timeout=3.0, idle_timeout=60.0)


@pytest.fixture
def url(redis_server: RedisServer) -> str:
    redis_server.command(b"FLUSHALL")
    return redis_server.url(1)


async def _trackers(nursery: trio.Nursery, url: str, count: int = 2, config: TrackerConfig = CONFIG) -> list[RunningTracker]:
    return [await nursery.start(serve_tracker, attrs.evolve(config, state=url)) for _ in range(count)]


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    with trio.fail_after(TIMEOUT):
        while not await check():
            await trio.sleep(0.005)


async def _client(running: RunningTracker, port: int, peer_id: bytes | None = None) -> TrackerTestClient:
    client = await open_client(running.host, running.port, peer_id)
    await client.register(port)
    return client


async def _holder_ports(client: TrackerTestClient, manifest: Manifest) -> set[int]:
    reply = await client.request(WhoHas(manifest.file_id, 50))
    if isinstance(reply, Error):
        return set()
    assert isinstance(reply, Holders), reply
    return {holder.port for holder in reply.holders}


async def _listed(client: TrackerTestClient) -> set[str]:
    reply = await client.request(ListFiles())
    assert isinstance(reply, FileList), reply
    return {entry.name for entry in reply.entries}


async def test_a_peer_registered_at_one_is_found_at_the_other(nursery: trio.Nursery, url: str) -> None:
    a, b = await _trackers(nursery, url)
    seeder = await _client(a, 7001)
    manifest = make_manifest("shared.bin")
    assert isinstance(await seeder.request(Publish(manifest)), Published)
    assert await seeder.request(Announce(manifest.file_id, ((0, 2),))) == Ok()
    asker = await _client(b, 7002)

    async def found() -> bool:
        return await _holder_ports(asker, manifest) == {7001}

    await _until(found)  # published and announced at A: listed and held at B
    assert await _listed(asker) == {"shared.bin"}
    assert b.service.registry.get_peer(seeder.peer_id) is not None
    # What changes at A changes at B: more chunks, a withdrawal, a goodbye.
    assert await seeder.request(Announce(manifest.file_id, ((2, 4),))) == Ok()

    async def complete() -> bool:
        return b.service.registry.record(manifest.file_id).complete_copies == 1

    await _until(complete)
    # And the other way round: a peer registered at B is found at A.
    await asker.request(Announce(manifest.file_id, ((0, 1),)))
    watcher = await _client(a, 7003)

    async def both() -> bool:
        return await _holder_ports(watcher, manifest) == {7001, 7002}

    await _until(both)
    assert await seeder.request(Deregister()) == Ok()

    async def gone() -> bool:
        return await _holder_ports(watcher, manifest) == {7002} and b.service.registry.get_peer(seeder.peer_id) is None

    await _until(gone)


async def test_a_withdrawal_and_a_closed_bound_connection_reach_the_other(nursery: trio.Nursery, url: str) -> None:
    a, b = await _trackers(nursery, url)
    manifest = make_manifest("w.bin")
    seeder = await open_client(a.host, a.port)
    await seeder.register(7001, {WITHDRAW: 1})  # bound: the registration goes with the connection
    assert isinstance(await seeder.request(Publish(manifest)), Published)
    assert await seeder.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
    asker = await _client(b, 7002)

    async def held(ports: set[int]) -> bool:
        return await _holder_ports(asker, manifest) == ports

    await _until(lambda: held({7001}))
    assert await seeder.request(Withdraw(manifest.file_id, ((0, 4),))) == Ok()
    await _until(lambda: held(set()))
    assert await seeder.request(Announce(manifest.file_id, ((1, 2),))) == Ok()
    await _until(lambda: held({7001}))
    await seeder.aclose()

    async def released() -> bool:
        return b.service.registry.get_peer(seeder.peer_id) is None

    await _until(released)


async def _identified(running: RunningTracker, key: NodeKey, port: int) -> Connection:
    hello = Hello(os.urandom(20), port, capabilities={UNPUBLISH: 1})
    conn, _ = await open_greeted(connect_tcp, (running.host, running.port), hello, key=key)
    await conn.send(Register(port))
    assert isinstance(await conn.receive(), Ok)
    return conn


async def _ask(conn: Connection, request: Message) -> Message:
    await conn.send(request)
    return await conn.receive()


async def test_unpublish_and_quotas_hold_across_trackers(nursery: trio.Nursery, url: str) -> None:
    a, b = await _trackers(nursery, url, config=attrs.evolve(CONFIG, max_files_per_publisher=2))
    owner, other = NodeKey.generate(), NodeKey.generate()
    at_a, at_b, other_at_b = await _identified(a, owner, 7001), await _identified(b, owner, 7002), await _identified(b, other, 7003)
    first, second, third = (make_manifest(f"q{i}.bin") for i in range(3))
    assert isinstance(await _ask(at_a, Publish(first)), Published)
    assert isinstance(await _ask(at_a, Publish(second)), Published)

    async def counted() -> bool:
        return b.service.publishers.usage(owner.node_id)[0] == 2

    await _until(counted)
    over = await _ask(at_b, Publish(third))  # two files published at A: B refuses the third
    assert isinstance(over, Error) and over.code == ErrorCode.QUOTA_EXCEEDED, over
    refused = await _ask(other_at_b, Unpublish(first.file_id))  # published at A by another node
    assert isinstance(refused, Error) and refused.code == ErrorCode.IDENTITY_CONFLICT, refused
    assert await _ask(at_b, Unpublish(first.file_id)) == Ok()  # its publisher, at the other tracker

    async def unlisted() -> bool:
        return not a.service.registry.has_file(first.file_id)

    await _until(unlisted)
    gone = await _ask(at_a, GetManifest(first.file_id))
    assert isinstance(gone, Error) and gone.code == ErrorCode.UNKNOWN_FILE
    assert isinstance(await _ask(at_b, Publish(third)), Published)  # the quota given back, at both
    assert isinstance(await _ask(at_a, GetManifest(second.file_id)), ManifestReply)


@pytest.mark.slow
async def test_a_silent_peer_expires_everywhere_and_a_heartbeating_one_nowhere(nursery: trio.Nursery, url: str) -> None:
    a, b = await _trackers(nursery, url)
    for running in (a, b):
        nursery.start_soon(running.service.expiry_loop)
    quiet, chatty = await _client(a, 7001), await _client(a, 7002)
    await _until(lambda: _has(b, quiet.peer_id, chatty.peer_id))
    await quiet.aclose()  # silent from now on, at A and so everywhere
    # Heartbeats at A only, for two more peer timeouts: B hears of them and keeps the peer.
    with trio.fail_after(TIMEOUT):
        while a.service.registry.get_peer(quiet.peer_id) is not None or b.service.registry.get_peer(quiet.peer_id) is not None:
            assert await chatty.request(Heartbeat()) == Ok()
            await trio.sleep(CONFIG.heartbeat_interval / 2)
    for _ in range(int(2 * CONFIG.peer_timeout / (CONFIG.heartbeat_interval / 2))):
        assert await chatty.request(Heartbeat()) == Ok()
        await trio.sleep(CONFIG.heartbeat_interval / 2)
    assert b.service.registry.get_peer(chatty.peer_id) is not None
    assert a.service.registry.get_peer(chatty.peer_id) is not None


async def _has(running: RunningTracker, *peer_ids: bytes) -> bool:
    return all(running.service.registry.get_peer(peer_id) is not None for peer_id in peer_ids)


async def test_a_tracker_that_starts_later_loads_the_swarm(nursery: trio.Nursery, url: str) -> None:
    (a,) = await _trackers(nursery, url, 1)
    seeder = await _client(a, 7001)
    manifest = make_manifest("early.bin")
    assert isinstance(await seeder.request(Publish(manifest)), Published)
    assert await seeder.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
    await trio.sleep(0.2)  # written (nothing to poll for: no other tracker yet)
    (late,) = await _trackers(nursery, url, 1)
    asker = await _client(late, 7002)
    assert await _holder_ports(asker, manifest) == {7001}
    assert late.service.registry.record(manifest.file_id).complete_copies == 1


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop."""
    with run_redis() as server:
        yield server


async def test_with_redis_down_a_tracker_serves_what_it_has_and_refuses_publishing(
    nursery: trio.Nursery, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    (a,) = await _trackers(nursery, own_redis.url(0), 1)
    seeder = await _client(a, 7001)
    manifest = make_manifest("kept.bin")
    assert isinstance(await seeder.request(Publish(manifest)), Published)
    assert await seeder.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
    own_redis.process.kill()
    own_redis.process.wait()
    # Served from the tracker's own copy: registrations, announcements, look-ups.
    late = await _client(a, 7002)
    assert await late.request(Announce(manifest.file_id, ((0, 1),))) == Ok()
    assert await _holder_ports(seeder, manifest) == {7002}
    refused = await late.request(Publish(make_manifest("new.bin")))
    assert isinstance(refused, Error) and refused.code == ErrorCode.INTERNAL, refused

    def said() -> bool:
        return any("unreachable" in r.getMessage() and "serving from this tracker's copy" in r.getMessage() for r in caplog.records)

    with trio.fail_after(TIMEOUT):
        while not said():
            await trio.sleep(0.01)
    assert a.service.registry.file_count == 1


@pytest.mark.slow
async def test_two_tracker_processes_share_one_swarm(nursery: trio.Nursery, url: str, tmp_path: pathlib.Path) -> None:
    common = ("--state", url, "--heartbeat-interval", "1")
    async with start_tracker(nursery, tmp_path / "a.db", *common) as (_, port_a), start_tracker(nursery, tmp_path / "b.db", *common) as (_, port_b):
        seeder = await open_client("127.0.0.1", port_a)
        await seeder.register(7001)
        manifest = make_manifest("procs.bin")
        assert isinstance(await seeder.request(Publish(manifest)), Published)
        assert await seeder.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
        asker = await open_client("127.0.0.1", port_b)
        await asker.register(7002)

        async def found() -> bool:
            return await _holder_ports(asker, manifest) == {7001}

        await _until(found)
        assert await _listed(asker) == {"procs.bin"}
        await seeder.aclose()  # silent: expires at both processes after the peer timeout (3 s)

        async def expired() -> bool:
            assert await asker.request(Heartbeat()) == Ok()
            return not await _holder_ports(asker, manifest)

        await _until(expired)


async def test_a_tracker_without_its_redis_does_not_start_and_says_why() -> None:
    with pytest.raises(StorageError, match=re.escape("cannot reach the shared state at redis://127.0.0.1:1/0")):
        await serve_tracker(attrs.evolve(CONFIG, state="redis://127.0.0.1:1/0"))
