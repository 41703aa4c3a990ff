"""Small chunks answered in runs (``peer/chunk_runs.py``): the same frames, in order, in fewer writes."""

from __future__ import annotations

import os
import pathlib

import trio
import trio.testing

from common.codec import Codec
from common.framing import ErrorCode
from common.manifest import Manifest, build_manifest
from common.messages import ChunkData, ChunkError, RequestChunk
from peer.chunk_runs import RUN_BYTES, SMALL_CHUNK, collect_run
from peer.connection import Connection
from peer.request_queue import RequestQueue
from peer.server import ChunkServer
from peer.storage.library import Library, open_published
from tests.test_peer_server import PEER_ID, handshake

CHUNK = 64 * 1024


def publish(library: Library, path: pathlib.Path, size: int, chunk_size: int) -> tuple[Manifest, bytes]:
    data = os.urandom(size)
    path.write_bytes(data)
    manifest = build_manifest(path, chunk_size)
    st = os.stat(path)
    library.add(open_published(path, manifest, (st.st_size, st.st_mtime_ns)))
    return manifest, data


async def test_small_chunks_leave_in_one_write_each_frame_as_before(tmp_path: pathlib.Path) -> None:
    library = Library()
    small, data = publish(library, tmp_path / "small.bin", 10 * CHUNK, CHUNK)
    client_stream, server_stream = trio.testing.memory_stream_pair()
    writes = 0
    pump = server_stream.send_stream.send_all_hook
    assert pump is not None

    async def counted() -> None:
        nonlocal writes
        writes += 1
        await pump()

    server_stream.send_stream.send_all_hook = counted
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ChunkServer(library, PEER_ID).handle_stream, server_stream)
        conn = Connection(client_stream)
        await handshake(conn)
        writes = 0
        requests = [RequestChunk(small.file_id, i) for i in (0, 1, 2, 3, 4)] + [RequestChunk(bytes(32), 0)]
        requests += [RequestChunk(small.file_id, i) for i in (5, 6, 7, 8, 9)]
        await conn.send_many(requests)
        replies = [await conn.receive() for _ in requests]
        await conn.aclose()
    for reply, request in zip(replies[:5] + replies[6:], requests[:5] + requests[6:], strict=True):
        assert reply == ChunkData(small.file_id, request.index, data[request.index * CHUNK : (request.index + 1) * CHUNK])
    assert isinstance(replies[5], ChunkError) and replies[5].code == ErrorCode.NOT_HELD  # in its place, between the runs
    assert writes <= 3  # a run, the error, a run (one write per chunk before: 11)


def test_a_run_takes_small_chunks_up_to_its_bound_and_leaves_the_rest(tmp_path: pathlib.Path) -> None:
    library = Library()
    small, _ = publish(library, tmp_path / "small.bin", 40 * CHUNK, CHUNK)
    large, _ = publish(library, tmp_path / "large.bin", 4 * 2 * SMALL_CHUNK, 2 * SMALL_CHUNK)
    queue = RequestQueue()
    for i in range(1, 20):
        queue.put((small.file_id, i))
    run = collect_run(library, (small.file_id, 0), queue, Codec())
    assert run is not None
    try:
        assert run.nbytes == RUN_BYTES and len(run.lengths) == RUN_BYTES // CHUNK  # the bound
        assert len(queue) == 20 - RUN_BYTES // CHUNK
    finally:
        run.close()
    assert collect_run(library, (large.file_id, 0), queue, Codec()) is None  # large chunks: the usual path
    assert collect_run(library, (bytes(32), 0), queue, Codec()) is None  # not held: answered by the usual path
    queue = RequestQueue()
    queue.put((large.file_id, 1))
    queue.put((small.file_id, 2))
    run = collect_run(library, (small.file_id, 1), queue, Codec())
    assert run is not None
    run.close()
    assert run.lengths == [CHUNK] and len(queue) == 2  # stops at the large one: answers keep their order


async def test_a_file_changed_on_disk_is_left_out_of_its_run_answered_not_held_and_withdrawn(tmp_path: pathlib.Path) -> None:
    library = Library()
    kept, data = publish(library, tmp_path / "kept.bin", 4 * CHUNK, CHUNK)
    gone, _ = publish(library, tmp_path / "gone.bin", 4 * CHUNK, CHUNK)
    (tmp_path / "gone.bin").write_bytes(os.urandom(3 * CHUNK))  # changed under the server's feet
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ChunkServer(library, PEER_ID).handle_stream, server_stream)
        conn = Connection(client_stream)
        await handshake(conn)
        requests = [RequestChunk(fid, i) for i in range(4) for fid in (kept.file_id, gone.file_id)]
        await conn.send_many(requests)
        replies = [await conn.receive() for _ in requests]
        await conn.aclose()
    got = {(r.file_id, r.index): r for r in replies}
    assert len(got) == len(requests)
    for i in range(4):
        assert got[kept.file_id, i] == ChunkData(kept.file_id, i, data[i * CHUNK : (i + 1) * CHUNK])
        error = got[gone.file_id, i]
        assert isinstance(error, ChunkError) and error.code == ErrorCode.NOT_HELD
    held = library.get(gone.file_id)
    assert held is None or held.withdrawn


def test_a_file_removed_while_its_run_is_read_is_closed_once_the_run_is_over(tmp_path: pathlib.Path) -> None:
    library = Library()
    small, data = publish(library, tmp_path / "small.bin", 2 * CHUNK, CHUNK)
    held = library.get(small.file_id)
    assert held is not None
    queue = RequestQueue()
    queue.put((small.file_id, 1))
    run = collect_run(library, (small.file_id, 0), queue, Codec())
    assert run is not None
    library.remove(small.file_id)  # meanwhile, on the event loop: its descriptor must not be closed (nor reused) under the read
    assert held.fd >= 0 and held.withdrawn
    codec = Codec()
    try:
        frames = run.read()
    finally:
        run.close()
    assert held.fd == -1  # closed by the run's end
    assert frames == b"".join(codec.send(ChunkData(small.file_id, i, data[i * CHUNK : (i + 1) * CHUNK])) for i in (0, 1))
