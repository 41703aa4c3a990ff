"""Peers swarming over 127.0.0.1 with an in-process tracker and in-process peers."""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import attrs
import pytest
import trio

import peer.download_file
from common.chunkset import ChunkSet
from common.errors import AmbiguousFile, IntegrityError, NoHolders, StorageError, TrackerUnavailable, UnknownFile
from common.manifest import Manifest, build_manifest
from common.messages import Announce, CancelChunk, Hello, Holders, Message, Publish, WhoHas
from peer.config import PeerConfig
from peer.connection import Connection
from peer.node import Peer, open_peer
from peer.storage.library import HeldFile
from peer.tracker_client import TrackerLink
from tracker.config import TrackerConfig
from tracker.service import serve_tracker

CHUNK = 64 * 1024
SIZE = 4 * 1024 * 1024 + 1000


@pytest.fixture
async def tracker(nursery: trio.Nursery) -> tuple[str, int]:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, heartbeat_interval=1.0, peer_timeout=3.0))
    return running.host, running.port


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "src" / "data.bin"
    path.parent.mkdir()
    path.write_bytes(os.urandom(SIZE))
    return path


class Swarm:
    def __init__(self, tracker: tuple[str, int], root: pathlib.Path) -> None:
        self.tracker = tracker
        self.root = root
        self.count = 0

    @asynccontextmanager
    async def peer(self, **overrides: object) -> AsyncIterator[Peer]:
        self.count += 1
        label = f"peer-{self.count}"
        settings: dict[str, object] = dict(tracker=self.tracker, state_dir=self.root / label, label=label, chunk_size=CHUNK,
                                           refresh_interval=0.2, announce_delay=0.05, stall_timeout=5.0, request_timeout=5.0,
                                           peer_retry_delay=0.5)
        settings.update(overrides)
        async with open_peer(PeerConfig(**settings)) as peer:  # type: ignore[arg-type]
            await peer.connect()
            yield peer


@pytest.fixture
def swarm(tracker: tuple[str, int], tmp_path: pathlib.Path) -> Swarm:
    return Swarm(tracker, tmp_path)


async def offer(peer: Peer, path: pathlib.Path, manifest: Manifest, indexes: list[int] | range, *, cls: type[HeldFile] = HeldFile) -> None:
    """Make ``peer`` serve only ``indexes`` of ``manifest`` from ``path`` (no change detection)."""
    have = ChunkSet.from_indexes(manifest.chunk_count, indexes)
    peer.library.add(cls(manifest, path, os.open(path, os.O_RDONLY), have))
    await peer.tracker.request_many([Publish(manifest), Announce(manifest.file_id, have.ranges())])


@attrs.define(eq=False)
class ServeOnce(HeldFile):
    """Hands out each chunk once: other downloaders must get it from whoever got it."""

    served: set[int] = attrs.field(factory=set)

    def may_serve(self, index: int) -> bool:  # (asked by offers, and by chunk runs, which check the disk in their thread)
        if index in self.served:
            return False
        self.served.add(index)
        return super().may_serve(index)


async def test_publish_then_download(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer() as getter:
            (manifest,) = await seeder.publish([source.parent])
            result = await getter.download(manifest.hex_id[:10], tmp_path / "out")
            assert result.path.read_bytes() == source.read_bytes()
            assert result.chunks_received == manifest.chunk_count
            assert list(result.received) == [f"peer-1 (127.0.0.1:{seeder.listen_address[1]})"]
            assert not (tmp_path / "out" / "data.bin.part").exists()
            assert getter.status().files == (("data.bin", manifest.hex_id, manifest.chunk_count, manifest.chunk_count),)
            upload = seeder.status().uploaded
            assert sum(c.bytes for c in upload.values()) == SIZE
            # A second download of a file already in place transfers nothing, and says it serves it:
            # a third peer is sent to it.
            async with swarm.peer() as other:
                again = await other.download("data.bin", tmp_path / "out")
                assert again.already_complete and again.chunks_received == 0
                holders = await seeder.tracker.request(WhoHas(manifest.file_id), Holders)
                assert other.peer_id in {holder.peer_id for holder in holders.holders}


class HashingProgress:
    """A progress sink that records what publishing reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        self.events.append(("started", total_bytes))

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self.events.append(("chunk", nbytes))

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        assert (name, total_bytes) == ("data.bin", SIZE)
        self.events.append(("hashing", hashed_bytes))

    def finished(self) -> None:
        self.events.append(("finished", 0))


async def test_publish_reports_hashing_progress(swarm: Swarm, source: pathlib.Path) -> None:
    with trio.fail_after(20):
        async with swarm.peer() as seeder:
            progress = HashingProgress()
            await seeder.publish([source], progress=progress)
            kinds = [kind for kind, _ in progress.events]
            assert kinds[-1] == "finished" and set(kinds[:-1]) == {"hashing"}, kinds
            hashed = [nbytes for _, nbytes in progress.events[:-1]]
            assert hashed == sorted(hashed) and hashed[-1] == SIZE
            # A cached manifest is not hashed again: nothing to report.
            again = HashingProgress()
            await seeder.publish([source], progress=again)
            assert again.events == []


async def test_two_seeders_with_disjoint_halves(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    half = manifest.chunk_count // 2
    with trio.fail_after(20):
        async with swarm.peer() as first, swarm.peer() as second, swarm.peer() as getter:
            await offer(first, source, manifest, range(half))
            await offer(second, source, manifest, range(half, manifest.chunk_count))
            result = await getter.download("data.bin", tmp_path / "out")
            assert result.path.read_bytes() == source.read_bytes()
            by_label = {name.split(" ")[0]: count.chunks for name, count in result.received.items()}
            assert by_label == {"peer-1": half, "peer-2": manifest.chunk_count - half}


async def test_two_downloaders_feed_each_other(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    with trio.fail_after(30):
        async with swarm.peer() as seeder, swarm.peer() as one, swarm.peer() as two:
            await offer(seeder, source, manifest, range(manifest.chunk_count), cls=ServeOnce)
            results = {}

            async def get(peer: Peer, out: str) -> None:
                results[peer.label] = await peer.download("data.bin", tmp_path / out)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get, one, "one")
                nursery.start_soon(get, two, "two")
            for result in results.values():
                assert result.path.read_bytes() == source.read_bytes()
            one_up = one.status().uploaded
            two_up = two.status().uploaded
            assert any(name.startswith("peer-3") and c.chunks > 0 for name, c in one_up.items())
            assert any(name.startswith("peer-2") and c.chunks > 0 for name, c in two_up.items())


async def test_corrupt_peer_is_banned_and_never_written(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    chunk = 16 * 1024
    manifest = build_manifest(source, chunk)
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(bytes(b ^ 0x5A for b in source.read_bytes()))
    with trio.fail_after(30):
        async with swarm.peer(chunk_size=chunk) as liar, swarm.peer(chunk_size=chunk) as honest, \
                swarm.peer(chunk_size=chunk, ban_threshold=2) as getter:
            await offer(liar, corrupt, manifest, range(manifest.chunk_count))
            await offer(honest, source, manifest, range(manifest.chunk_count))
            result = await getter.download("data.bin", tmp_path / "out")
            assert result.path.read_bytes() == source.read_bytes()
            assert liar.status().uploaded, "the corrupt peer was never asked"
            assert result.bad_chunks >= 2
            assert not any(name.startswith("peer-1") for name in result.received)  # nothing from the liar was kept
            assert result.chunks_refetched >= 2


async def test_no_holder_keeps_the_part_file(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    with trio.fail_after(20):
        async with swarm.peer() as partial, swarm.peer(stall_timeout=0.5) as getter:
            await offer(partial, source, manifest, range(10))
            with pytest.raises(NoHolders, match="run get again") as info:
                await getter.download("data.bin", tmp_path / "out")
            assert len(info.value.missing) == manifest.chunk_count - 10
            assert (tmp_path / "out" / "data.bin.part").exists()
            assert not (tmp_path / "out" / "data.bin").exists()
            # The rest appears: the next attempt resumes and fetches only what is missing.
            async with swarm.peer() as full:
                await full.publish([source])
                result = await getter.download("data.bin", tmp_path / "out")
            assert result.chunks_resumed == 10
            assert result.chunks_received == manifest.chunk_count - 10
            assert result.path.read_bytes() == source.read_bytes()


async def test_resolve_errors_and_existing_file(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    other = tmp_path / "other" / "data.bin"
    other.parent.mkdir()
    other.write_bytes(b"another file with the same name")
    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer() as getter:
            (manifest,) = await seeder.publish([source])
            await seeder.publish([other])
            with pytest.raises(AmbiguousFile) as info:
                await getter.resolve("data.bin")
            assert len(info.value.candidates) == 2
            with pytest.raises(UnknownFile):
                await getter.resolve("nothing-like-this")
            out = tmp_path / "out"
            out.mkdir()
            (out / "data.bin").write_bytes(b"precious")
            with pytest.raises(StorageError, match="--force"):
                await getter.download(manifest.hex_id, out)
            assert (out / "data.bin").read_bytes() == b"precious"
            result = await getter.download(manifest.hex_id, out, force=True)
            assert result.path.read_bytes() == source.read_bytes()


async def stoppable_tracker(config: TrackerConfig, *, task_status: trio.TaskStatus[tuple[object, trio.CancelScope]]) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(serve_tracker, config)
            task_status.started((running, scope))


@attrs.define(eq=False)
class RestartableTracker:
    """An in-process tracker that can be stopped and started again, empty, on the same port."""

    nursery: trio.Nursery
    config: TrackerConfig
    address: tuple[str, int]
    scope: trio.CancelScope

    async def stop(self, peer: Peer) -> None:
        """Stop the tracker and wait until ``peer`` has noticed."""
        self.scope.cancel()
        while peer.connected:
            await trio.sleep(0.01)

    async def restart(self) -> None:
        await self.nursery.start(serve_tracker, attrs.evolve(self.config, port=self.address[1]))


@pytest.fixture
async def restartable(nursery: trio.Nursery) -> RestartableTracker:
    config = TrackerConfig(port=0, db_path=None, heartbeat_interval=0.2, peer_timeout=3.0)
    running, scope = await nursery.start(stoppable_tracker, config)
    return RestartableTracker(nursery, config, (running.host, running.port), scope)


async def test_reconnects_and_reannounces_after_tracker_restart(restartable: RestartableTracker, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    swarm = Swarm(restartable.address, tmp_path)
    with trio.fail_after(30):
        async with swarm.peer(reconnect_max_delay=0.2) as seeder:
            await seeder.publish([source])
            await restartable.stop(seeder)
            # A new, empty tracker on the same port: the seeder registers and publishes again.
            await restartable.restart()
            async with swarm.peer() as getter:
                while not await getter.list_files():
                    await trio.sleep(0.05)
                result = await getter.download("data.bin", tmp_path / "out")
                assert result.path.read_bytes() == source.read_bytes()


async def test_connect_while_reconnecting_raises_then_waits_for_the_tracker(restartable: RestartableTracker, tmp_path: pathlib.Path) -> None:
    swarm = Swarm(restartable.address, tmp_path)
    with trio.fail_after(30):
        async with swarm.peer(reconnect_max_delay=0.2, tracker_timeout=1.0) as peer:
            await restartable.stop(peer)
            # A reconnection loop is running: connect() must not return as if it had worked.
            with pytest.raises(TrackerUnavailable, match=r"unreachable.*still reconnecting in the background"):
                await peer.connect()
            assert not peer.connected
            await restartable.restart()
            await peer.connect()  # waits for the background reconnection
            assert peer.connected


async def test_disconnect_then_connect_again(swarm: Swarm, source: pathlib.Path) -> None:
    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer() as watcher:
            await seeder.publish([source])
            (entry,) = await watcher.list_files()
            assert entry.holders == 1 and seeder.connected
            await seeder.disconnect()
            assert not seeder.connected
            (entry,) = await watcher.list_files()
            assert entry.holders == 0
            await seeder.connect()
            assert seeder.connected
            (entry,) = await watcher.list_files()
            assert entry.holders == 1 and entry.complete_copies == 1
            status = seeder.status()
            assert status.connected and status.files[0][0] == "data.bin" and status.listen_address == seeder.listen_address


class Progress:
    """A progress sink that counts chunks and wakes waiters."""

    def __init__(self) -> None:
        self.chunks = 0
        self.changed = trio.Event()

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        pass

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self.chunks += 1
        self.changed.set()
        self.changed = trio.Event()

    def peers(self, count: int) -> None:
        pass

    def finished(self) -> None:
        pass


async def test_a_seeder_appearing_mid_download_is_used(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    manifest = build_manifest(source, CHUNK)
    half = manifest.chunk_count // 2
    progress = Progress()
    with trio.fail_after(20):
        async with swarm.peer() as partial, swarm.peer(stall_timeout=15.0) as getter:
            await offer(partial, source, manifest, range(half))
            results = []
            done = trio.Event()

            async def get() -> None:
                results.append(await getter.download("data.bin", tmp_path / "out", progress=progress))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(get)
                while progress.chunks < half:
                    await progress.changed.wait()
                # The getter has all it can find; a full seeder appears and the refresh finds it.
                async with swarm.peer() as late:
                    await late.publish([source])
                    await done.wait()
            (result,) = results
            assert result.path.read_bytes() == source.read_bytes()
            by_label = {name.split(" ")[0]: count.chunks for name, count in result.received.items()}
            assert by_label == {"peer-1": half, "peer-3": manifest.chunk_count - half}


async def silent_peer(*, task_status: trio.TaskStatus[int]) -> None:
    """Says WELCOME, then never answers a request."""
    from common.codec import Codec
    from common.messages import Welcome

    async def handler(stream: trio.SocketStream) -> None:
        codec = Codec()
        await stream.send_all(codec.send(Welcome(b"z" * 20, agent="silent")))
        while await stream.receive_some(65536):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def start_silent_holder(swarm: Swarm, manifest: Manifest, nursery: trio.Nursery) -> None:
    """A silent peer (see above) that the tracker is told holds every chunk of ``manifest``."""
    port = await nursery.start(silent_peer)
    link = await TrackerLink.open(swarm.tracker, Hello(b"s" * 20, listen_port=port, agent="silent"), timeout=5, register_port=port)
    nursery.start_soon(link.run)
    await link.request_many([Publish(manifest), Announce(manifest.file_id, ChunkSet.full(manifest.chunk_count).ranges())], timeout=5)


async def test_a_silent_peer_times_out_and_its_requests_move(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path,
                                                             nursery: trio.Nursery) -> None:
    await start_silent_holder(swarm, build_manifest(source, CHUNK), nursery)
    with trio.fail_after(20):
        async with swarm.peer() as honest, swarm.peer(request_timeout=0.5, endgame_copies=1) as getter:
            await honest.publish([source])
            result = await getter.download("data.bin", tmp_path / "out")
            assert result.path.read_bytes() == source.read_bytes()
            assert list(result.received) == [f"peer-1 (127.0.0.1:{honest.listen_address[1]})"]


async def test_a_cancel_that_cannot_be_sent_does_not_hold_up_the_download(
    swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Endgame: a chunk asked of both the silent peer and the honest one comes from the
    # honest one, and the silent one is told to cancel. A send to a peer whose socket
    # takes nothing more never completes; the chunk must count as held all the same.
    cancels: list[CancelChunk] = []
    send = Connection.send

    async def send_except_cancels(self: Connection, message: Message) -> None:
        if isinstance(message, CancelChunk):
            cancels.append(message)
            await trio.sleep_forever()
        await send(self, message)

    monkeypatch.setattr(Connection, "send", send_except_cancels)
    await start_silent_holder(swarm, build_manifest(source, CHUNK), nursery)
    with trio.fail_after(20):
        async with swarm.peer() as honest, swarm.peer(request_timeout=5, endgame_copies=2) as getter:
            await honest.publish([source])
            result = await getter.download("data.bin", tmp_path / "out")
    assert result.path.read_bytes() == source.read_bytes()
    assert cancels  # the endgame did ask both


async def test_a_minimal_progress_sink_is_enough(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    events: list[tuple[object, ...]] = []

    class Minimal:
        def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
            events.append(("started", name, total_bytes, already_have_bytes))

        def chunk(self, index: int, nbytes: int, source_label: str) -> None:
            events.append(("chunk", index, nbytes, source_label.split(" ")[0]))

        def finished(self) -> None:
            events.append(("finished",))

    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer() as getter:
            (manifest,) = await seeder.publish([source])
            await getter.download("data.bin", tmp_path / "out", progress=Minimal())
    assert events[0] == ("started", "data.bin", SIZE, 0) and events[-1] == ("finished",)
    chunks = events[1:-1]
    assert sorted(e[1] for e in chunks) == list(range(manifest.chunk_count))  # type: ignore[type-var]
    assert sum(e[2] for e in chunks) == SIZE and {e[3] for e in chunks} == {"peer-1"}  # type: ignore[misc]


async def test_a_chunk_that_goes_bad_on_disk_is_fetched_again(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With verify_writes, the read-back of written chunks catches a chunk changed on disk after its write; it is downloaded again."""
    written = peer.download_file.verify_and_write
    spoiled: list[int] = []

    def bad_device(manifest: Manifest, fd: int, index: int, data: bytes | bytearray | memoryview) -> None:
        written(manifest, fd, index, data)
        if not spoiled:
            spoiled.append(index)
            os.pwrite(fd, b"\0" * 16, manifest.chunk_offset(index) + 7)

    monkeypatch.setattr(peer.download_file, "verify_and_write", bad_device)
    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer(read_back_window=4 * CHUNK, verify_writes=True) as getter:
            (manifest,) = await seeder.publish([source.parent])
            result = await getter.download("data.bin", tmp_path / "out")
            assert result.path.read_bytes() == source.read_bytes()
            assert result.bad_chunks == 1 and result.chunks_refetched == 1
            assert result.chunks_received == manifest.chunk_count + 1


async def test_a_part_file_cut_behind_the_download_fails_it(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Without verify_writes (the default), a part file whose size changed after the writes is still caught, by its size."""
    written = peer.download_file.verify_and_write

    def cutting(manifest: Manifest, fd: int, index: int, data: bytes | bytearray | memoryview) -> None:
        written(manifest, fd, index, data)
        if index == manifest.chunk_count - 1:  # no later write reaches this far
            os.ftruncate(fd, manifest.chunk_offset(index) + 1)

    monkeypatch.setattr(peer.download_file, "verify_and_write", cutting)
    with trio.fail_after(20):
        async with swarm.peer() as seeder, swarm.peer() as getter:
            await seeder.publish([source.parent])
            with pytest.raises(IntegrityError, match="changed behind the download"):
                await getter.download("data.bin", tmp_path / "out")
    assert not (tmp_path / "out" / "data.bin").exists()


async def test_sources_rotate_without_losing_a_chunk(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    """With every place taken and other holders waiting, the source that delivered least makes room once its requests are in (issue 16)."""
    caplog.set_level(logging.DEBUG, logger="peer")
    manifest = build_manifest(source, CHUNK)
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            for _ in range(4):  # holders slow enough for the download to last a few rotations
                holder = await stack.enter_async_context(swarm.peer(max_upload_rate=2 * 1024 * 1024))
                await offer(holder, source, manifest, range(manifest.chunk_count))
            getter = await stack.enter_async_context(swarm.peer(max_download_peers=2, rotate_interval=0.1))
            result = await getter.download("data.bin", tmp_path / "out")
    assert result.path.read_bytes() == source.read_bytes() and result.bad_chunks == 0
    # A retired source's requests in flight are answered, not thrown away and asked again elsewhere: cutting
    # it off at once asked 27-29 chunks again here (a full pipeline per rotation), retiring it 0 (a trial
    # source cut off at the start may cost its two).
    assert result.chunks_received == manifest.chunk_count and result.chunks_refetched <= 4
    rotated = [r for r in caplog.records if "its place goes to another holder" in r.getMessage()]
    assert len(rotated) >= 2
    assert "dropping" not in caplog.text  # retired, not cut off
