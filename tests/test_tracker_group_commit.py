"""Group commit (``tracker/staging.py``): the PUBLISHes of a pipelined batch reach the disk together, before any reply is sent."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from common.codec import NEED_DATA, Codec
from common.errors import StorageError
from common.manifest import Manifest
from common.messages import Announce, Error, Ok, Publish, Published
from tests.tracker_client_helper import TrackerTestClient, make_manifest
from tracker.config import TrackerConfig
from tracker.service import TrackerService
from tracker.store import Store

CONFIG = TrackerConfig(heartbeat_interval=10.0, peer_timeout=30.0, idle_timeout=60.0)


class RecordingStore(Store):
    """An in-memory store that records each transaction of saves (and can be made to fail)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.transactions: list[list[bytes]] = []
        self.committed: set[bytes] = set()
        self.fail = False

    def save_many(self, manifests: Sequence[tuple[Manifest, bytes | None]]) -> None:
        if self.fail:
            raise StorageError("the disk is full")
        super().save_many(manifests)
        self.transactions.append([m.file_id for m, _ in manifests])
        self.committed.update(m.file_id for m, _ in manifests)


class WatchingStream(trio.abc.Stream):
    """The tracker's side of the connection: for every reply it sends, which files were committed at that moment."""

    def __init__(self, inner: trio.abc.Stream, store: RecordingStore) -> None:
        self.inner = inner
        self.store = store
        self.codec = Codec()
        #: (file id of a PUBLISHED reply, whether it was committed when the reply was sent)
        self.sent: list[tuple[bytes, bool]] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.codec.receive_data(bytes(data))
        while (event := self.codec.next_event()) is not NEED_DATA:
            if isinstance(event, Published):
                self.sent.append((event.file_id, event.file_id in self.store.committed))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _client(nursery: trio.Nursery) -> tuple[TrackerTestClient, WatchingStream, TrackerService]:
    store = RecordingStore()
    service = TrackerService.create(CONFIG, store)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    watching = WatchingStream(server_stream, store)
    nursery.start_soon(service.handle_stream, watching, ("10.0.0.1", 1))
    client = TrackerTestClient(client_stream)
    await client.register()
    return client, watching, service


async def test_a_pipelined_batch_is_committed_in_few_transactions_before_its_replies(nursery: trio.Nursery) -> None:
    client, watching, service = await _client(nursery)
    store = service.store
    assert isinstance(store, RecordingStore)
    manifests = [make_manifest(f"f{i}.bin", chunks=1) for i in range(300)]
    batch = [m for manifest in manifests for m in (Publish(manifest), Announce(manifest.file_id, ((0, 1),)))]
    await client.send(*batch)
    replies = [await client.receive() for _ in batch]
    assert replies == [r for manifest in manifests for r in (Published(manifest.file_id), Ok())]
    # Every PUBLISHED left only once its manifest was on disk ...
    assert [file_id for file_id, _ in watching.sent] == [m.file_id for m in manifests]
    assert all(committed for _, committed in watching.sent)
    # ... and the 300 saves took a few transactions (one per read, at most), not 300.
    assert sum(map(len, store.transactions)) == 300
    assert len(store.transactions) <= 30
    assert sorted(m.file_id for m in store.load()) == sorted(m.file_id for m in manifests)


async def test_a_failed_commit_refuses_and_unlists_the_whole_batch(nursery: trio.Nursery) -> None:
    client, _watching, service = await _client(nursery)
    store = service.store
    assert isinstance(store, RecordingStore)
    kept = make_manifest("kept.bin", chunks=1)
    assert await client.request(Publish(kept)) == Published(kept.file_id)
    store.fail = True
    manifests = [make_manifest(f"f{i}.bin", chunks=1) for i in range(20)]
    await client.send(*(Publish(m) for m in manifests), Publish(kept))
    replies = [await client.receive() for _ in range(21)]
    assert all(isinstance(r, Error) and r.code_name == "INTERNAL" for r in replies[:20])
    assert replies[20] == Published(kept.file_id)  # published before by this publisher: nothing to store
    assert [service.registry.has_file(m.file_id) for m in manifests] == [False] * 20
    assert service.registry.has_file(kept.file_id)
    store.fail = False
    assert await client.request(Publish(manifests[0])) == Published(manifests[0].file_id)  # the connection serves on
