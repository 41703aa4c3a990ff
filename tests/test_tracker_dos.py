"""No single client breaks the tracker (issue 12, findings 2, 3, 5 and 6's tracker half).

* A name or an id prefix is resolved by the tracker (LOOKUP, PROTOCOL.md §8.9), so
  ``get`` works with 200,000 files of long names in the catalogue, newer ones too,
  and a listing says how many files it left out rather than failing.
* A listing yields by files scanned, and a pipelined batch by time: 400
  pipelined LIST_FILES that match nothing in 100,000 files do not freeze the
  other clients (they did for ~3 s).
* Per-address caps on peer ids and connections; holders handed out once per address.
"""

from __future__ import annotations

import gc
import os
import pathlib
import time
from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from common.capabilities import LOOKUP
from common.codec import Codec
from common.errors import UnknownFile
from common.framing import HEADER_SIZE, ErrorCode, Opcode, decode_header
from common.manifest import MAX_CHUNKS, Manifest, merkle_root
from common.messages import Announce, Error, FileList, Holders, ListFiles, Lookup, Ok, Publish, Published, Register, Stats, StatsReply, WhoHas
from peer.catalogue import open_catalogue
from peer.config import PeerConfig
from tests.test_peer_swarm import Swarm
from tests.tracker_client_helper import TrackerTestClient, make_manifest
from tracker.config import DEFAULT_CONNECTIONS_PER_IP, IO_PATHS, IoPath, TrackerConfig
from tracker.service import RunningTracker, serve_tracker

#: A name of 250 bytes, as the flood used: 60,000 of them passed a frame.
LONG = "x" * 236


def catalogue(count: int, tag: str = "") -> list[Manifest]:
    """``count`` one-chunk manifests of long names: consistent (their ids are their Merkle roots), built without re-validating names."""
    with attrs.validators.disabled():  # validating 200,000 long names takes seconds; these are valid by construction
        manifests = []
        for i in range(count):
            digest = os.urandom(32)
            manifests.append(Manifest(f"{tag}{i:07d}-{LONG}.bin", 1024, 1024, (digest,), merkle_root([digest])))
        return manifests


@pytest.fixture
async def running(nursery: trio.Nursery, state: str | None) -> RunningTracker:
    # Long timeouts: filling the registry with 200,000 files holds the event loop a second or two.
    config = TrackerConfig(port=0, db_path=None, heartbeat_interval=10.0, peer_timeout=60.0, state=state)
    return await nursery.start(serve_tracker, config)  # type: ignore[no-any-return]


# -- finding 3: the catalogue flood ------------------------------------------------
async def test_get_by_name_and_id_prefix_with_200000_newer_files(running: RunningTracker, tmp_path: pathlib.Path) -> None:
    source = tmp_path / "src" / "victim.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(200_000))
    swarm = Swarm((running.host, running.port), tmp_path)
    flood = catalogue(200_000)
    with trio.fail_after(120):
        async with swarm.peer() as seeder, swarm.peer() as getter:
            (victim,) = await seeder.publish([source])
            registry = running.service.registry
            for manifest in flood:  # all newer than the victim
                registry.publish(manifest, checked=True)
            result = await getter.download("victim.bin", tmp_path / "by-name")
            assert result.manifest == victim and result.path.read_bytes() == source.read_bytes()
            result = await getter.download(victim.hex_id[:10].upper(), tmp_path / "by-id")
            assert result.manifest == victim
            with pytest.raises(UnknownFile, match=r"no file named 'absent\.bin'"):
                await getter.resolve("absent.bin")
            # ls: as much as a frame holds, newest first, and how many more there are.
            async with open_catalogue(PeerConfig(tracker=swarm.tracker)) as catalogue_link:
                listing = await catalogue_link.listing("", 100_000)
                assert 10_000 < len(listing.entries) < 100_000
                assert len(listing.entries) + listing.more == 200_001
                assert listing.entries[0].name == f"{199_999:07d}-{LONG}.bin"


def test_lookup_is_exact_by_name_prefixed_by_id_newest_first() -> None:
    from tracker.registry import Registry

    registry = Registry(30.0, lambda: 0.0)
    same = [make_manifest("same.bin", seed=bytes([i])) for i in range(5)]
    everything = [*same, make_manifest("Same.bin"), make_manifest("same.bin.txt")]
    for manifest in everything:
        registry.publish(manifest)
    found, more = registry.lookup("same.bin", 3)
    assert [s.manifest for s in found] == same[:1:-1] and more == 2  # the newest three, two left out
    assert registry.lookup("SAME.BIN", 10) == ([], 0)  # a name is exact
    target = same[1]
    for prefix in (target.hex_id[:7], target.hex_id[:8].upper(), target.hex_id):
        found, more = registry.lookup(prefix, 10)
        assert [s.manifest for s in found] == [target] and more == 0
    # An id prefix several ids share: each, newest first.
    shared = next(p for p in "0123456789abcdef" if sum(m.hex_id.startswith(p) for m in everything) >= 2)
    expected = [m for m in reversed(everything) if m.hex_id.startswith(shared)]
    assert [s.manifest for s in registry.lookup(shared, 10)[0]] == expected
    registry.drop_unheld([target.file_id])  # no holder: it may leave, and the index forgets it
    assert registry.lookup(target.hex_id, 10) == ([], 0)
    assert len(registry.lookup("same.bin", 10)[0]) == 4


async def test_lookup_needs_the_capability_and_caps_its_answer(running: RunningTracker) -> None:
    registry = running.service.registry
    manifests = catalogue(1500, tag="n")
    for manifest in manifests:
        registry.publish(manifest, checked=True)
    async with await _client(running, "127.0.0.1") as client:
        await client.hello(capabilities={LOOKUP: 1})
        reply = await client.request(Lookup(manifests[7].name, 5))
        assert isinstance(reply, FileList) and [e.file_id for e in reply.entries] == [manifests[7].file_id] and reply.more == 0
        reply = await client.request(Lookup("0", 1000))  # a 1-digit id prefix: ~1/16 of the files
        assert isinstance(reply, FileList) and reply.entries and all(e.file_id.hex().startswith("0") for e in reply.entries)
        assert len(reply.entries) + reply.more == sum(m.hex_id.startswith("0") for m in manifests)
        listing = await client.request(ListFiles("", limit=1000))
        assert isinstance(listing, FileList) and len(listing.entries) == 1000 and listing.more == 500
    async with await _client(running, "127.0.0.1") as old:
        await old.hello()  # offers nothing: protocol 1 as first specified
        listing = await old.request(ListFiles("", limit=1000))
        assert isinstance(listing, FileList) and listing.more == 0  # no field it does not know
        await old.send(Lookup("x", 1))
        [error] = await old.closed_after()
        assert isinstance(error, Error) and error.code == ErrorCode.BAD_REQUEST and "capability lookup" in error.message


# -- finding 5: the loop freeze ------------------------------------------------------
async def _client(running: RunningTracker, source: str) -> TrackerTestClient:
    """A client whose connection comes from ``source`` (any of 127/8 is this machine on Linux)."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect((running.host, running.port))
    return _Closing(trio.SocketStream(sock))


class _Closing(TrackerTestClient):
    async def __aenter__(self) -> TrackerTestClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@pytest.mark.parametrize("io", IO_PATHS)
@pytest.mark.parametrize("flood", ["list", "lookup"])
async def test_400_pipelined_requests_do_not_freeze_other_clients(nursery: trio.Nursery, io: IoPath, flood: str) -> None:
    running: RunningTracker = await nursery.start(serve_tracker, TrackerConfig(port=0, io=io))
    for manifest in catalogue(100_000):
        running.service.registry.publish(manifest, checked=True)
    # As `chunkswarm tracker` does (tracker_command.py), so that a full collection of this
    # process's 100,000 manifests (~100 ms) does not count against the tracker.
    gc.collect()
    gc.freeze()
    try:
        await _flood(running, flood, io)
    finally:
        gc.unfreeze()


async def _flood(running: RunningTracker, flood: str, io: IoPath) -> None:
    attacker = await _client(running, "127.0.0.2")
    await attacker.hello(capabilities={LOOKUP: 1})
    probe = await _client(running, "127.0.0.3")
    await probe.hello()
    # LIST_FILES that match nothing scan the whole catalogue (the connection's task);
    # LOOKUPs of a 1-digit id prefix pick the newest of ~6,000 matches, a few ms each,
    # for a short answer (the hub's fast path, ~110 of them to a flush of replies).
    request = ListFiles("matches-nothing", limit=1000) if flood == "list" else Lookup("a", 1)
    flood_done = trio.Event()
    round_trips: list[float] = []

    async def attack() -> None:
        await attacker.send_raw(Codec().send(request) * 400)  # about 10 KB, one write
        # The replies are counted by their headers, not decoded: decoding 400,000 entries
        # in this process would hold the event loop the tracker shares with it.
        received = bytearray()
        replies = 0
        while replies < 400:
            data = await attacker.stream.receive_some(1 << 20)
            assert data, "the tracker closed the connection"
            received += data
            while len(received) >= HEADER_SIZE:
                header = decode_header(received)
                if len(received) < HEADER_SIZE + header.length:
                    break
                assert header.opcode == Opcode.FILE_LIST
                del received[: HEADER_SIZE + header.length]
                replies += 1
        flood_done.set()

    async def measure() -> None:
        while not flood_done.is_set():
            began = time.perf_counter()
            assert isinstance(await probe.request(Stats()), StatsReply)
            round_trips.append(time.perf_counter() - began)

    steps = LongestStep()
    trio.lowlevel.add_instrument(steps)
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as both:
                both.start_soon(attack)
                both.start_soon(measure)
    finally:
        trio.lowlevel.remove_instrument(steps)
    worst = max(round_trips)
    print(f"\n[400 pipelined {flood}, --io {io}] probe round trips: {len(round_trips)}, worst {worst * 1000:.1f} ms; "
          f"longest step of any task {steps.longest * 1000:.1f} ms")  # fmt: skip
    # The probe is answered again and again during the flood (before: 7 s with no round trip in between on
    # epoll), and no task step does more than ~5-25 ms of work. Work, not wall time: counted in the thread's CPU
    # time, which a loaded machine descheduling this process does not stretch (a wall-clock bound failed there,
    # on the code before too).
    assert len(round_trips) > 10
    assert steps.longest < 0.25


class LongestStep(trio.abc.Instrument):
    """The most CPU time one task step took without yielding: how much work it held the event loop for."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._began = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._began = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self._began:  # not the step that added this instrument
            self.longest = max(self.longest, time.thread_time() - self._began)
        self._began = 0.0


# -- findings 2 and 6: caps per address, holders once per address -----------------------
async def test_300_peer_ids_from_one_address_register_only_its_cap(running: RunningTracker) -> None:
    cap = running.service.config.max_peers_per_ip
    answers = []
    with trio.fail_after(60):
        for _ in range(300):
            async with await _client(running, "127.0.0.2") as fake:
                await fake.hello(listen_port=9)
                await fake.send(Register(9))
                answers.append(await fake.closed_after() if len(answers) >= cap else [await fake.receive()])
    assert answers[:cap] == [[Ok()]] * cap
    for refused in answers[cap:]:  # one clear ERROR, then the connection is closed
        [error] = refused
        assert isinstance(error, Error) and error.code == ErrorCode.BUSY and f"{cap} peer ids" in error.message
    assert running.service.registry.peer_count == cap
    async with await _client(running, "127.0.0.3") as honest:  # another address is served
        await honest.register(7000)
    assert running.service.registry.peer_count == cap + 1


def test_ipv6_peer_ids_count_per_64() -> None:
    from tracker.registry import Registry

    registry = Registry(30.0, lambda: 0.0, max_peers_per_ip=2)
    registry.register(b"a" * 20, "2001:db8::1", 1)
    registry.register(b"b" * 20, "2001:db8::ffff:2", 1)
    with pytest.raises(Exception, match="2001:db8::/64 has 2 peer ids"):
        registry.register(b"c" * 20, "2001:db8::3", 1)
    registry.register(b"c" * 20, "2001:db8:0:1::1", 1)  # another /64
    registry.deregister(b"a" * 20, "2001:db8::1")
    registry.register(b"d" * 20, "2001:db8::3", 1)  # room again


async def test_connections_past_one_address_cap_do_not_lock_out_another(running: RunningTracker) -> None:
    cap = running.service.config.max_connections_per_ip
    assert cap == DEFAULT_CONNECTIONS_PER_IP
    hogs = []
    for _ in range(cap):
        hog = await _client(running, "127.0.0.2")
        await hog.hello()
        hogs.append(hog)
    refused = await _client(running, "127.0.0.2")
    with trio.fail_after(10):
        [error] = await refused.closed_after()
    assert isinstance(error, Error) and error.code == ErrorCode.TOO_MANY_CONNECTIONS and "127.0.0.2" in error.message
    async with await _client(running, "127.0.0.3") as other:  # served while 127.0.0.2 holds its cap
        await other.hello()
        assert isinstance(await other.request(Stats()), StatsReply)
    await hogs.pop().aclose()
    with trio.fail_after(5):
        while running.service.connections_per_network.get("127.0.0.2") == cap:
            await trio.sleep(0.01)
    async with await _client(running, "127.0.0.2") as again:  # room again once one has gone
        await again.hello()
    for hog in hogs:
        await hog.aclose()


@pytest.fixture
async def tarpit(nursery: trio.Nursery) -> AsyncIterator[RunningTracker]:
    config = TrackerConfig(port=0, db_path=None, max_peers_per_ip=1000, max_connections_per_ip=1000)
    yield await nursery.start(serve_tracker, config)


async def test_who_has_names_each_address_once(tarpit: RunningTracker) -> None:
    """300 peer ids at one port (a tarpit) and one honest holder: two holders, the honest one always among them."""
    manifest = make_manifest("victim.bin", chunks=4)
    registry = tarpit.service.registry
    registry.publish(manifest)
    for i in range(300):
        peer, _ = registry.register(i.to_bytes(20, "big"), "127.0.0.2", 9)
        registry.announce(peer, manifest.file_id, ((0, 4),))
    async with await _client(tarpit, "127.0.0.3") as honest, await _client(tarpit, "127.0.0.4") as getter:
        await honest.register(7000)
        assert await honest.request(Announce(manifest.file_id, ((0, 4),))) == Ok()
        await getter.hello()
        for _ in range(20):
            reply = await getter.request(WhoHas(manifest.file_id, 50))
            assert isinstance(reply, Holders)
            assert sorted((h.host, h.port) for h in reply.holders) == [("127.0.0.2", 9), ("127.0.0.3", 7000)]
    # Once the tarpit's ids are gone, a window is taken as before (no address claimed twice).
    for i in range(300):
        registry.deregister(i.to_bytes(20, "big"), "127.0.0.2")
    assert registry.addresses.crowded == 0


async def test_the_largest_publish_is_decoded_off_the_event_loop(running: RunningTracker) -> None:
    """A PUBLISH of 2^19 chunks (16 MiB) took ~0.7 s to decode, on the event loop every client shares."""
    hashes = [os.urandom(32) for _ in range(MAX_CHUNKS)]
    with attrs.validators.disabled():
        manifest = Manifest("huge.bin", MAX_CHUNKS * 1024, 1024, tuple(hashes), merkle_root(hashes))
    frame = Codec().send(Publish(manifest))
    async with await _client(running, "127.0.0.2") as publisher:
        await publisher.register(7000)
        steps = LongestStep()
        trio.lowlevel.add_instrument(steps)
        try:
            with trio.fail_after(60):
                await publisher.send_raw(frame)
                assert await publisher.receive() == Published(manifest.file_id)
        finally:
            trio.lowlevel.remove_instrument(steps)
    print(f"\n[a PUBLISH of {MAX_CHUNKS} chunks] longest step of any task {steps.longest * 1000:.1f} ms")
    assert running.service.registry.has_file(manifest.file_id)
    # ~20 ms alone (0.11 s seen on a machine loaded 4-13); decoded on the loop it took 0.7 s (0.2 at best).
    assert steps.longest < 0.15
