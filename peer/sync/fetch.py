"""Many small files at once: one WHO_HAS round trip for all of them, then pipelined chunk requests on a few connections per holder.

A synced file of up to :data:`SMALL_FILE` bytes is published as one chunk
(:func:`sync_chunk_size`), so its file id is the SHA-256 of its content: it is
verified without its manifest, and it costs one REQUEST_CHUNK on a connection
that is already open. The general :class:`~peer.download.Downloader` (a
manifest, WHO_HAS, a connection and a handshake per file) is kept for larger
files, where those round trips are small beside the transfer. 10,000 files of
1-20 KB through a Downloader each would cost 30,000 round trips.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from common.codec import Codec
from common.errors import ChunkswarmError
from common.manifest import MIN_CHUNK_SIZE, chunk_size_for, sha256
from common.messages import ChunkData, ChunkError, Holders, RequestChunk, WhoHas
from peer.greeting import connect_tcp, open_greeted
from peer.node import Peer
from peer.secure import secured
from peer.tasks import open_nursery

__all__ = ["SMALL_FILE", "sync_chunk_size", "fetch_small_files"]

logger = logging.getLogger(__name__)

#: Files up to this size are one chunk when a sync node publishes them.
SMALL_FILE = 1024 * 1024
#: WHO_HAS requests per pipelined batch to the tracker.
_WHO_HAS_BATCH = 2000
#: Requests in flight per connection: the chunk server queues up to ``max_queued_requests`` (16) per connection.
_IN_FLIGHT = 12
#: Connections per holder at most.
_CONNECTIONS = 6
#: Received chunks written per worker-thread call.
_WRITE_BATCH = 64

#: Called in batches with (file id, data) pairs verified; returns nothing (it writes them, in a worker thread or not).
Deliver = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]


def sync_chunk_size(size: int) -> int:
    """A sync node's chunk size for a file of ``size`` bytes: one chunk up to :data:`SMALL_FILE`, ``chunk_size_for`` above (at least 1 MiB chunks)."""
    if size <= SMALL_FILE:
        return max(MIN_CHUNK_SIZE, 1 << max(size - 1, 0).bit_length())
    return max(chunk_size_for(size), SMALL_FILE)


def _wrong_contents(batch: list[tuple[bytes, bytes]]) -> set[bytes]:
    """The file ids of ``batch`` whose content is not the one they name (a single-chunk file's id is its SHA-256)."""
    return {file_id for file_id, data in batch if sha256(data) != file_id}


async def _holders(peer: Peer, file_ids: Sequence[bytes]) -> dict[bytes, list[tuple[bytes, str, int]]]:
    """For each file id, its holders as (peer id, host, port), asked in pipelined batches."""
    found: dict[bytes, list[tuple[bytes, str, int]]] = {}
    for start in range(0, len(file_ids), _WHO_HAS_BATCH):
        batch = file_ids[start : start + _WHO_HAS_BATCH]
        replies = await peer.tracker.request_many([WhoHas(file_id, max_peers=8) for file_id in batch])
        for file_id, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Holders):
                found[file_id] = [(h.peer_id, h.host, h.port) for h in reply.holders if h.peer_id != peer.peer_id]
    return found


async def fetch_small_files(peer: Peer, wanted: dict[bytes, tuple[int, bytes]], deliver: Deliver) -> set[bytes]:
    """Fetch the single-chunk files ``wanted`` (file id -> (size, preferred holder's short node id)); the file ids not fetched.

    Each file comes from one holder, the node that made the change if it holds
    it; ``deliver`` gets verified contents in batches.
    """
    holders = await _holders(peer, list(wanted))
    by_holder: dict[tuple[bytes, str, int], list[bytes]] = {}
    missing = set()
    for file_id, (_size, author) in wanted.items():
        listed = holders.get(file_id) or []
        if not listed:
            missing.add(file_id)
            continue
        preferred = [h for h in listed if h[0][: len(author)] == author] if author else []
        by_holder.setdefault((preferred or listed)[0], []).append(file_id)
    failed: set[bytes] = set(missing)
    logger.debug("%s: fetching %d small files from %d holders (%d listed by nobody)", peer.name, len(wanted), len(by_holder), len(missing))
    started = trio.current_time()
    async with open_nursery() as nursery:
        for holder, file_ids in by_holder.items():
            nursery.start_soon(_from_holder, peer, holder, file_ids, wanted, deliver, failed)
    logger.debug("%s: %d small files fetched in %.2f s, %d failed", peer.name, len(wanted) - len(failed), trio.current_time() - started,
                 len(failed))
    return failed


async def _from_holder(peer: Peer, holder: tuple[bytes, str, int], file_ids: list[bytes], wanted: dict[bytes, tuple[int, bytes]],
                       deliver: Deliver, failed: set[bytes]) -> None:  # fmt: skip
    queue = list(reversed(file_ids))
    connections = min(_CONNECTIONS, 1 + len(file_ids) // 64)
    async with open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(_one_connection, peer, holder, queue, wanted, deliver, failed)


async def _one_connection(peer: Peer, holder: tuple[bytes, str, int], queue: list[bytes], wanted: dict[bytes, tuple[int, bytes]],
                          deliver: Deliver, failed: set[bytes]) -> None:  # fmt: skip
    peer_id, host, port = holder
    config = peer.config
    pending: set[bytes] = set()
    # In a private swarm: TLS, the proof of membership, the holder pinned to the peer id the tracker listed.
    connect, prove = secured(peer.private, connect_tcp, f"{host}:{port}", peer_id)
    try:
        with trio.fail_after(config.connect_timeout):
            conn, _agreement = await open_greeted(
                connect, (host, port), peer.hello, key=config.node_key, prove=prove,
                make_codec=lambda: Codec(max_receive_size=SMALL_FILE + 1024))  # fmt: skip
    except (ChunkswarmError, OSError, trio.TooSlowError) as exc:
        logger.info("%s: cannot fetch from %s:%d: %s", config.name, host, port, exc)
        failed.update(queue)
        queue.clear()
        return
    slots = trio.Semaphore(_IN_FLIGHT)
    done = trio.Event()
    received: list[tuple[bytes, bytes]] = []
    # Verified contents go to a writer task in batches: the receiver keeps reading while they are written.
    batches_in, batches_out = trio.open_memory_channel[list[tuple[bytes, bytes]]](4)

    async def requester() -> None:
        while queue:
            await slots.acquire()
            if not queue:  # the other connections to this holder took the rest
                slots.release()
                break
            batch = [queue.pop()]
            while queue and slots.value > 0:
                slots.acquire_nowait()
                batch.append(queue.pop())
            pending.update(batch)
            await conn.send_many([RequestChunk(file_id, 0) for file_id in batch])
        done.set()

    async def writer() -> None:
        async with batches_out:
            async for batch in batches_out:
                # Verified here, the batch in one worker-thread call: not one SHA-256 per file on the event loop.
                wrong = await trio.to_thread.run_sync(_wrong_contents, batch)
                for file_id in wrong:
                    logger.warning("%s: %s:%d sent a wrong chunk for %s", config.name, host, port, file_id.hex()[:16])
                failed.update(wrong)
                await deliver([item for item in batch if item[0] not in wrong] if wrong else batch)

    async def flush() -> None:
        if received:
            batch = received[:]
            received.clear()
            await batches_in.send(batch)

    async def receiver() -> None:
        async with open_nursery() as nursery:
            nursery.start_soon(requester)
            while not (done.is_set() and not pending):
                message = await conn.receive_within(config.request_timeout)
                if isinstance(message, ChunkData) and message.file_id in pending and message.index == 0:
                    pending.discard(message.file_id)
                    slots.release()
                    data = bytes(message.data)
                    if len(data) == wanted[message.file_id][0]:
                        received.append((message.file_id, data))  # its hash checked by the writer
                    else:
                        logger.warning("%s: %s:%d sent a wrong chunk for %s", config.name, host, port, message.file_id.hex()[:16])
                        failed.add(message.file_id)
                elif isinstance(message, ChunkError) and message.file_id in pending:
                    pending.discard(message.file_id)
                    slots.release()
                    failed.add(message.file_id)
                if len(received) >= _WRITE_BATCH or (received and not pending):
                    await flush()
            nursery.cancel_scope.cancel()

    async with open_nursery() as outer:
        outer.start_soon(writer)
        async with batches_in:
            try:
                await receiver()
            except (ChunkswarmError, OSError) as exc:
                logger.info("%s: fetching from %s:%d stopped: %s", config.name, host, port, exc)
                failed.update(pending)
                failed.update(queue)
                queue.clear()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await conn.aclose()
            await flush()
