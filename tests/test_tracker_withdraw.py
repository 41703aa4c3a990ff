"""The capability ``withdraw`` at the tracker (PROTOCOL.md §8.5): WITHDRAW, and a registration bound to its connection.

Over memory streams first (every way a connection ends, under a mock clock
for the idle timeout), then over real sockets on both socket paths (the ``io``
fixture: the readiness hub's fast path and trio's streams), where a connection
can also be reset.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
import trio
import trio.testing

from common.capabilities import WITHDRAW
from common.codec import Codec
from common.framing import ErrorCode
from common.manifest import Manifest
from common.messages import Announce, Deregister, Error, FileList, Holders, ListFiles, Ok, Register, Stats, StatsReply, WhoHas, Withdraw
from tests.state_backends import tracker_service
from tests.test_tracker_integration import TIMEOUT, io, start  # noqa: F401  (io is a fixture)
from tests.test_tracker_server import CONFIG, connect
from tests.tracker_client_helper import TrackerTestClient, make_manifest, open_client
from tracker.config import IoPath, TrackerConfig
from tracker.service import RunningTracker, TrackerService

OFFER = {WITHDRAW: 1}
SEEDER = b"S" * 20
#: Peers outlive every connection here unless something drops them: the idle timeout comes first.
LONG_LIVED = attrs.evolve(CONFIG, peer_timeout=600.0, idle_timeout=60.0)


@pytest.fixture
async def service(state: str | None) -> AsyncIterator[TrackerService]:
    """A tracker on each state backend (``tests/conftest.py``)."""
    async with tracker_service(LONG_LIVED, state) as running:
        yield running


async def seed(client: TrackerTestClient, manifest: Manifest, *, capabilities: dict[str, int] | None) -> None:
    """Register ``client`` offering ``capabilities`` and announce all of ``manifest`` (published beforehand)."""
    await client.register(6881, capabilities)
    assert await client.request(Announce(manifest.file_id, ((0, manifest.chunk_count),))) == Ok()


async def holders(asker: TrackerTestClient, manifest: Manifest) -> dict[bytes, bytes]:
    """Who holds ``manifest``, as the tracker answers WHO_HAS: peer id -> bitfield."""
    reply = await asker.request(WhoHas(manifest.file_id))
    assert isinstance(reply, Holders)
    return {h.peer_id: h.bitfield for h in reply.holders}


async def counts(asker: TrackerTestClient, manifest: Manifest) -> tuple[int, int]:
    """(holders, complete copies) as LIST_FILES answers."""
    listing = await asker.request(ListFiles(manifest.name))
    assert isinstance(listing, FileList)
    [entry] = listing.entries
    return entry.holders, entry.complete_copies


# -- over memory streams ----------------------------------------------------------
async def test_the_tracker_agrees_on_withdraw(service: TrackerService, nursery: trio.Nursery) -> None:
    client = connect(service, nursery)
    assert (await client.hello(capabilities={WITHDRAW: 7, "x-demo": 1})).capabilities == ((WITHDRAW, 1),)


async def test_withdraw_of_part_and_of_all_of_a_replica(service: TrackerService, nursery: trio.Nursery) -> None:
    manifest = make_manifest("movie.mkv", chunks=10)
    service.registry.publish(manifest)
    seeder = connect(service, nursery, "10.0.0.1", peer_id=SEEDER)
    await seed(seeder, manifest, capabilities=OFFER)
    asker = connect(service, nursery, "10.0.0.2")
    await asker.hello()
    assert await holders(asker, manifest) == {SEEDER: b"\xff\xc0"}
    assert await counts(asker, manifest) == (1, 1)

    assert await seeder.request(Withdraw(manifest.file_id, ((2, 5), (9, 10)))) == Ok()
    assert await holders(asker, manifest) == {SEEDER: b"\xc7\x80"}  # 0, 1, 5, 6, 7, 8
    assert await counts(asker, manifest) == (1, 0)
    assert await seeder.request(Withdraw(manifest.file_id, ((0, 10),))) == Ok()
    assert await holders(asker, manifest) == {}
    assert await counts(asker, manifest) == (0, 0)
    assert service.registry.get_peer(SEEDER) is not None  # still registered: it may hold other files
    assert await seeder.request(Withdraw(manifest.file_id, ((0, 10),))) == Ok()  # again: nothing to do


async def test_withdraw_refusals_leave_the_connection_open(service: TrackerService, nursery: trio.Nursery) -> None:
    manifest = make_manifest(chunks=4)
    service.registry.publish(manifest)
    client = connect(service, nursery)
    await client.hello(6881, OFFER)
    await client.expect_error(Withdraw(manifest.file_id, ((0, 1),)), ErrorCode.NOT_REGISTERED)
    assert await client.request(Register(6881)) == Ok()
    await client.expect_error(Withdraw(bytes(32), ((0, 1),)), ErrorCode.UNKNOWN_FILE)
    await client.expect_error(Withdraw(manifest.file_id, ((0, 5),)), ErrorCode.BAD_REQUEST)
    assert await client.request(Withdraw(manifest.file_id, ((0, 4),))) == Ok()  # never announced: no error


async def test_withdraw_without_the_capability_is_a_violation(service: TrackerService, nursery: trio.Nursery) -> None:
    manifest = make_manifest(chunks=4)
    service.registry.publish(manifest)
    old = connect(service, nursery, "10.0.0.1", peer_id=SEEDER)
    await seed(old, manifest, capabilities=None)
    await old.send(Withdraw(manifest.file_id, ((0, 4),)))
    [error] = await old.closed_after()
    assert isinstance(error, Error) and error.code == ErrorCode.BAD_REQUEST
    assert "WITHDRAW needs the capability withdraw" in error.message
    asker = connect(service, nursery, "10.0.0.2")
    await asker.hello()
    assert await holders(asker, manifest) == {SEEDER: b"\xf0"}  # refused, and protocol 1: still listed


async def _end_with_eof(client: TrackerTestClient) -> None:
    await client.stream.send_eof()  # type: ignore[attr-defined]
    assert await client.closed_after() == []


async def _end_with_a_violation(client: TrackerTestClient) -> None:
    await client.send_raw(b"GET / HTTP/1.1\r\n\r\n")
    assert [type(m) for m in await client.closed_after()] == [Error]


async def _end_idle(client: TrackerTestClient) -> None:
    [error] = await client.closed_after()  # the mock clock jumps to the idle timeout
    assert isinstance(error, Error) and error.code == ErrorCode.TIMEOUT


ENDINGS: dict[str, Callable[[TrackerTestClient], Awaitable[None]]] = {
    "eof": _end_with_eof,
    "violation": _end_with_a_violation,
    "idle": _end_idle,
}


@pytest.mark.parametrize("ending", ENDINGS.values(), ids=list(ENDINGS))
@pytest.mark.parametrize(("capabilities", "listed"), [(OFFER, False), (None, True)], ids=["withdraw", "protocol-1"])
async def test_a_connection_that_ends_takes_its_registration_with_it_only_if_agreed(
    service: TrackerService,
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    ending: Callable[[TrackerTestClient], Awaitable[None]],
    capabilities: dict[str, int] | None,
    listed: bool,
) -> None:
    manifest = make_manifest(chunks=4)
    service.registry.publish(manifest)
    seeder = connect(service, nursery, "10.0.0.1", peer_id=SEEDER)
    await seed(seeder, manifest, capabilities=capabilities)
    await ending(seeder)
    asker = connect(service, nursery, "10.0.0.2")  # after the ending: it would idle out too
    await asker.hello()
    assert bool(await holders(asker, manifest)) is listed
    assert await counts(asker, manifest) == (int(listed), int(listed))
    assert (service.registry.get_peer(SEEDER) is not None) is listed


@pytest.mark.parametrize(("newer", "listed_after_newer_ends"), [(OFFER, False), (None, True)], ids=["newer-withdraw", "newer-protocol-1"])
async def test_a_newer_registration_survives_the_older_connections_close(
    service: TrackerService, nursery: trio.Nursery, newer: dict[str, int] | None, listed_after_newer_ends: bool
) -> None:
    manifest = make_manifest(chunks=4)
    service.registry.publish(manifest)
    first = connect(service, nursery, "10.0.0.1", 40001, peer_id=SEEDER)
    await seed(first, manifest, capabilities=OFFER)
    second = connect(service, nursery, "10.0.0.1", 40002, peer_id=SEEDER)  # the same peer, reconnected
    await second.register(6881, newer)
    asker = connect(service, nursery, "10.0.0.2")
    await asker.hello()
    await _end_with_eof(first)
    assert await holders(asker, manifest) == {SEEDER: b"\xf0"}  # registered again since, on another connection
    await _end_with_eof(second)
    assert bool(await holders(asker, manifest)) is listed_after_newer_ends


async def test_a_peer_that_left_properly_is_not_released_twice(service: TrackerService, nursery: trio.Nursery) -> None:
    manifest = make_manifest(chunks=4)
    service.registry.publish(manifest)
    seeder = connect(service, nursery, peer_id=SEEDER)
    await seed(seeder, manifest, capabilities=OFFER)
    assert await seeder.request(Deregister()) == Ok()
    await _end_with_eof(seeder)
    assert service.registry.peer_count == 0 and service.connections == 0


# -- over real sockets, on both socket paths ----------------------------------------
@pytest.fixture
async def running(nursery: trio.Nursery, io: IoPath, state: str | None) -> RunningTracker:
    return await start(nursery, TrackerConfig(port=0, io=io, state=state))


def _publish(running: RunningTracker, chunks: int = 4) -> Manifest:
    manifest = make_manifest(chunks=chunks)
    running.service.registry.publish(manifest)
    return manifest


async def _asker(running: RunningTracker) -> TrackerTestClient:
    """A client that only asks (HELLO, no REGISTER)."""
    client = await open_client(running.host, running.port)
    await client.hello()
    return client


async def _until_connections(running: RunningTracker, count: int) -> None:
    """Wait until the tracker has finished serving all but ``count`` connections."""
    with trio.fail_after(TIMEOUT):
        while running.stats()["connections"] > count:
            await trio.sleep(0.005)


async def test_withdraw_over_a_socket(running: RunningTracker) -> None:
    manifest = _publish(running, chunks=10)
    with trio.fail_after(TIMEOUT):
        seeder = await open_client(running.host, running.port, SEEDER)
        await seed(seeder, manifest, capabilities=OFFER)
        asker = await _asker(running)
        # Pipelined, so the hub's fast path answers a WITHDRAW between other requests.
        await seeder.send(Withdraw(manifest.file_id, ((1, 10),)), Stats(), Withdraw(manifest.file_id, ((0, 3),)))
        assert [type(await seeder.receive()) for _ in range(3)] == [Ok, StatsReply, Ok]
        assert await holders(asker, manifest) == {}
        old = await open_client(running.host, running.port)
        await seed(old, manifest, capabilities=None)
        await old.send_raw(Codec().send(Withdraw(manifest.file_id, ((0, 1),))))
        [error] = await old.closed_after()
        assert isinstance(error, Error) and error.code == ErrorCode.BAD_REQUEST
        assert list(await holders(asker, manifest)) == [old.peer_id]  # protocol 1: listed until it times out
        for client in (seeder, old, asker):
            await client.aclose()


async def _close(client: TrackerTestClient) -> None:
    await client.aclose()


async def _reset(client: TrackerTestClient) -> None:
    sock = client.stream.socket  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST, not FIN
    await client.aclose()


@pytest.mark.parametrize("ending", [_close, _reset], ids=["close", "reset"])
@pytest.mark.parametrize(("capabilities", "listed"), [(OFFER, False), (None, True)], ids=["withdraw", "protocol-1"])
async def test_a_socket_that_goes_takes_its_registration_with_it_only_if_agreed(
    running: RunningTracker, ending: Callable[[TrackerTestClient], Awaitable[None]], capabilities: dict[str, int] | None, listed: bool
) -> None:
    manifest = _publish(running)
    with trio.fail_after(TIMEOUT):
        asker = await _asker(running)
        seeder = await open_client(running.host, running.port, SEEDER)
        await seed(seeder, manifest, capabilities=capabilities)
        await ending(seeder)
        await _until_connections(running, 1)  # the tracker has seen it go: the asker's is left
        assert bool(await holders(asker, manifest)) is listed
        await asker.aclose()


async def test_a_newer_registration_survives_the_older_socket(running: RunningTracker) -> None:
    manifest = _publish(running)
    with trio.fail_after(TIMEOUT):
        asker = await _asker(running)
        first = await open_client(running.host, running.port, SEEDER)
        await seed(first, manifest, capabilities=OFFER)
        second = await open_client(running.host, running.port, SEEDER)
        await second.register(6881, OFFER)
        await _reset(first)
        await _until_connections(running, 2)
        assert list(await holders(asker, manifest)) == [SEEDER]
        await _close(second)
        await _until_connections(running, 1)
        assert await holders(asker, manifest) == {}
        await asker.aclose()
