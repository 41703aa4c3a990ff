"""A peer tells the tracker what it no longer serves (capability withdraw, PROTOCOL.md §8.5).

In-process tracker and peers over 127.0.0.1 (the fixtures of tests/test_peer_swarm.py);
a query-only client (HELLO, never REGISTER) asks WHO_HAS as any downloader would.
Waits are bounded with ``trio.fail_after``; nothing is timed beyond that.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Sequence

import attrs
import pytest
import trio

from common.capabilities import WITHDRAW
from common.chunkset import ChunkSet
from common.errors import ConnectionClosed, NoHolders
from common.framing import ErrorCode
from common.manifest import build_manifest
from common.messages import Announce, ChunkError, Hello, Holders, Message, Ok, RequestChunk, Welcome, WhoHas, Withdraw
from peer.connection import Connection
from peer.node import Peer
from peer.storage.fs import file_signature
from peer.storage.library import HeldFile, Library
from peer.withdrawals import Withdrawals
from tests.test_peer_swarm import CHUNK, Swarm, offer, source, swarm, tracker  # noqa: F401  (fixtures)
from tests.tracker_client_helper import TrackerTestClient, open_client
from tracker import connection as tracker_connection
from tracker import greeting as tracker_greeting

#: Every bounded wait here: a peer's withdrawal reaches the tracker well within it, or the test fails.
BOUND = 3.0


@pytest.fixture
async def asker(tracker: tuple[str, int]) -> AsyncIterator[TrackerTestClient]:
    client = await open_client(*tracker)
    await client.hello()
    yield client
    await client.aclose()


async def holders(asker: TrackerTestClient, file_id: bytes) -> set[bytes]:
    reply = await asker.request(WhoHas(file_id))
    assert isinstance(reply, Holders), reply
    return {holder.peer_id for holder in reply.holders}


async def gone(asker: TrackerTestClient, file_id: bytes, peer: Peer) -> None:
    """Wait (at most BOUND) until ``peer`` is no longer among the holders of ``file_id``."""
    with trio.fail_after(BOUND):
        while peer.peer_id in await holders(asker, file_id):
            await trio.sleep(0.02)


async def test_a_peer_agrees_on_withdraw_with_the_tracker(swarm: Swarm) -> None:
    async with swarm.peer() as peer:
        assert peer.tracker.speaks(WITHDRAW)


async def test_an_edited_file_is_withdrawn_without_a_request(swarm: Swarm, source: pathlib.Path, asker: TrackerTestClient) -> None:
    with trio.fail_after(20):
        async with swarm.peer(change_check_interval=0.05) as seeder:
            (manifest,) = await seeder.publish([source])
            assert await holders(asker, manifest.file_id) == {seeder.peer_id}
            with source.open("ab") as handle:
                handle.write(b"an edit")
            await gone(asker, manifest.file_id, seeder)
            assert seeder.status().files == ()
            assert seeder.connected  # still registered: withdrawing is not leaving


async def test_an_edited_file_asked_for_is_withdrawn_at_once(swarm: Swarm, source: pathlib.Path, asker: TrackerTestClient) -> None:
    with trio.fail_after(20):
        async with swarm.peer(change_check_interval=3600) as seeder:  # no sweep: the request notices
            (manifest,) = await seeder.publish([source])
            source.write_bytes(b"something else entirely")
            conn = Connection(await trio.open_tcp_stream(*seeder.listen_address))
            await conn.send(Hello(os.urandom(20)))
            assert isinstance(await conn.receive(), Welcome)
            await conn.send(RequestChunk(manifest.file_id, 0))
            reply = await conn.receive()
            assert isinstance(reply, ChunkError) and reply.code == ErrorCode.NOT_HELD
            await conn.aclose()
            await gone(asker, manifest.file_id, seeder)


@pytest.mark.parametrize("how", ["fails", "is cancelled"])
async def test_a_download_that_ends_unfinished_withdraws_its_part_file(
    swarm: Swarm, source: pathlib.Path, asker: TrackerTestClient, tmp_path: pathlib.Path, how: str
) -> None:
    manifest = build_manifest(source, CHUNK)
    with trio.fail_after(20):
        async with swarm.peer() as partial, swarm.peer(stall_timeout=1.0) as getter:
            await offer(partial, source, manifest, range(10))
            with trio.CancelScope() as scope:

                async def cancel_once_announced() -> None:
                    while getter.peer_id not in await holders(asker, manifest.file_id):  # its part file is served
                        await trio.sleep(0.02)
                    if how == "is cancelled":
                        scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_once_announced)
                    with pytest.raises(NoHolders):
                        await getter.download("data.bin", tmp_path / "out")
            assert scope.cancelled_caught == (how == "is cancelled")
            await gone(asker, manifest.file_id, getter)
            assert await holders(asker, manifest.file_id) == {partial.peer_id}
            assert (tmp_path / "out" / "data.bin.part").exists()  # kept for a resume: only no longer served


async def test_a_file_removed_from_the_library_is_withdrawn(swarm: Swarm, source: pathlib.Path, asker: TrackerTestClient) -> None:
    with trio.fail_after(20):
        async with swarm.peer() as seeder:
            (manifest,) = await seeder.publish([source])
            seeder.library.remove(manifest.file_id)
            await gone(asker, manifest.file_id, seeder)


async def test_a_tracker_that_does_not_speak_withdraw_is_never_sent_it(
    swarm: Swarm, source: pathlib.Path, asker: TrackerTestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracker_greeting, "SUPPORTED", {})  # as a tracker of protocol 1 agrees on nothing
    with trio.fail_after(20):
        async with swarm.peer(change_check_interval=0.05) as seeder:
            assert not seeder.tracker.speaks(WITHDRAW)
            (manifest,) = await seeder.publish([source])
            source.write_bytes(b"edited")
            while seeder.status().files:  # the sweep has withdrawn it here
                await trio.sleep(0.02)
            # A WITHDRAW would have been a violation: the link would be closed. It stays, and
            # the tracker, which cannot be told, lists the file until the peer leaves.
            assert await seeder.tracker.request(Announce(manifest.file_id, ()), Ok) == Ok()
            assert await holders(asker, manifest.file_id) == {seeder.peer_id}


async def test_what_stopped_being_served_while_disconnected_is_withdrawn_after_the_reconnection(
    swarm: Swarm, source: pathlib.Path, asker: TrackerTestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tracker that has not seen the old connection go when the peer registers again keeps
    # its registration and replicas (PROTOCOL.md §8.5): as if it never saw connections close.
    monkeypatch.setattr(tracker_connection.Connection, "release", lambda self: None)
    with trio.fail_after(20):
        async with swarm.peer(reconnect_min_delay=0.05) as seeder:
            (manifest,) = await seeder.publish([source])
            link = seeder.tracker._link
            assert link is not None
            await link.conn.aclose()  # the link breaks ...
            seeder.library.remove(manifest.file_id)  # ... and meanwhile the file stops being served
            while seeder.tracker._link in (link, None):  # reconnected
                await trio.sleep(0.02)
            await gone(asker, manifest.file_id, seeder)
            assert seeder.connected


# -- the bookkeeping of withdrawals, with a stand-in for the tracker client -------------
@attrs.define(eq=False)
class FakeTracker:
    connected: bool = True
    agreed: bool = True
    fail: bool = False
    sent: list[Message] = attrs.field(factory=list)
    #: Runs while a request is on its way.
    meanwhile: Callable[[], None] = lambda: None

    def speaks(self, capability: str) -> bool:
        return self.connected and self.agreed and capability == WITHDRAW

    async def request_many(self, messages: Sequence[Message]) -> list[Message]:
        if self.fail:
            raise ConnectionClosed("tracker connection lost")
        self.sent += messages
        self.meanwhile()
        return [Ok() for _ in messages]


def _held(tmp_path: pathlib.Path, name: str, chunks: int) -> HeldFile:
    path = tmp_path / name
    path.write_bytes(os.urandom(chunks * 1024))
    manifest = build_manifest(path, 1024)
    return HeldFile(manifest, path, os.open(path, os.O_RDONLY), ChunkSet.full(chunks))


async def test_withdrawals_wait_for_a_link_that_speaks_withdraw(tmp_path: pathlib.Path) -> None:
    library = Library()
    fake = FakeTracker(connected=False)
    withdrawals = Withdrawals(library, fake)  # type: ignore[arg-type]  # the two calls it makes
    library.on_withdraw = withdrawals.note
    kept, removed, empty = _held(tmp_path, "a", 3), _held(tmp_path, "b", 2), _held(tmp_path, "c", 0)
    for held in (kept, removed, empty):
        library.add(held)
    library.remove(removed.manifest.file_id)
    empty.withdraw()
    empty.withdraw()  # told once
    await withdrawals._send()  # disconnected: kept for the reconnection, whose on_connected takes them
    assert fake.sent == []
    assert withdrawals.take() == [Withdraw(removed.manifest.file_id, ((0, 2),)), Withdraw(empty.manifest.file_id, ())]
    assert withdrawals.take() == []  # taken once

    library.remove(kept.manifest.file_id)
    library.add(_again(kept))  # served again before it was sent: not withdrawn
    assert withdrawals.take() == []

    fake.connected, fake.fail = True, True
    library.add(_again(removed))
    library.remove(removed.manifest.file_id)
    await withdrawals._send()  # the link fails on the way: kept for the reconnection
    fake.fail = False
    await withdrawals._send()
    assert fake.sent == [Withdraw(removed.manifest.file_id, ((0, 2),))]

    # Served again while its WITHDRAW was on its way (a download resumed at once): announced again after it.
    fake.meanwhile = lambda: library.add(_again(removed))
    library.add(_again(removed))
    library.remove(removed.manifest.file_id)
    await withdrawals._send()
    assert fake.sent[1:] == [Withdraw(removed.manifest.file_id, ((0, 2),)), Announce(removed.manifest.file_id, ((0, 2),))]
    fake.meanwhile = lambda: None

    fake.agreed = False  # a tracker that does not speak it: nothing is sent, nothing kept
    library.remove(kept.manifest.file_id)
    await withdrawals._send()
    assert withdrawals.take() == [] and len(fake.sent) == 3
    library.close()


def _again(held: HeldFile) -> HeldFile:
    """Another entry for the file ``held`` serves, as a new publish or download of it makes."""
    return HeldFile(held.manifest, held.path, os.open(held.path, os.O_RDONLY), held.have.copy())


async def test_a_sweep_names_a_few_changed_files_and_counts_many(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    # A synced folder's user deleting 1,000 files got 1,000 warning lines; a sweep now says it in one.
    library = Library()
    withdrawals = Withdrawals(library, FakeTracker(), check_interval=0.01)  # type: ignore[arg-type]
    library.on_withdraw = withdrawals.note
    files = [_held(tmp_path, f"f{i}", 1) for i in range(12)]
    for held in files:
        held.signature = file_signature(held.path)
        library.add(held)

    async def sweep_until_withdrawn(changed: list[HeldFile]) -> list[str]:
        caplog.clear()
        for held in changed:
            held.path.unlink()
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(withdrawals.sweep)
                while not all(held.withdrawn for held in changed):
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        return [r.getMessage() for r in caplog.records if "changed on disk" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="peer.withdrawals"):
        assert await sweep_until_withdrawn(files[:2]) == [f"{files[0].path} changed on disk: no longer serving it",
                                                          f"{files[1].path} changed on disk: no longer serving it"]  # fmt: skip
        (line,) = await sweep_until_withdrawn(files[2:])
    assert line.startswith("10 files changed on disk: no longer serving them (") and line.endswith(" and 7 more)")
    library.close()
