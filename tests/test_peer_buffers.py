"""peer/buffers.py: receive buffers reused from one chunk to the next."""

from __future__ import annotations

import threading

import pytest

from common import messages as m
from common.codec import Codec, chunk_data_body_size, encode_message
from peer.buffers import BufferPool


def receive_chunk(codec: Codec, data: bytes) -> m.ChunkData:
    codec.receive_data(encode_message(m.ChunkData(b"\x02" * 32, 1, data)))
    event = codec.next_event()
    assert isinstance(event, m.ChunkData)
    return event


def test_a_buffer_given_back_is_taken_again() -> None:
    size = 256 * 1024
    pool = BufferPool(chunk_data_body_size(size))
    codec = Codec(allocate_body=pool.take)
    first = receive_chunk(codec, b"a" * size)
    buffer_id = id(first.data.obj)  # not a reference: one would (rightly) keep the buffer out of the pool
    pool.give_back(first.data)
    assert pool.idle == 1
    with pytest.raises(ValueError):
        bytes(first.data)  # released: whoever held it can no longer read it
    second = receive_chunk(codec, b"b" * size)
    assert id(second.data.obj) == buffer_id and bytes(second.data) == b"b" * size
    assert pool.idle == 0


def test_a_buffer_is_given_back_from_another_thread() -> None:
    pool = BufferPool(chunk_data_body_size(100_000))
    chunk = receive_chunk(Codec(allocate_body=pool.take), bytes(100_000))
    worker = threading.Thread(target=pool.give_back, args=(chunk.data,))
    del chunk  # the worker's argument is the last reference
    worker.start()
    worker.join()
    assert pool.idle == 1


def test_other_sizes_and_buffers_still_reachable_are_not_kept() -> None:
    pool = BufferPool(chunk_data_body_size(100_000), keep=1)
    codec = Codec(allocate_body=pool.take)
    pool.give_back(receive_chunk(codec, bytes(70_000)).data)  # a file's shorter last chunk
    assert pool.idle == 0
    held = receive_chunk(codec, bytes(100_000))
    piece = held.data[10:20]  # a view sliced from the chunk outlives the chunk's release
    pool.give_back(held.data)
    assert pool.idle == 0 and bytes(piece) == bytes(10)
    pool.give_back(receive_chunk(codec, bytes(100_000)).data)
    pool.give_back(receive_chunk(codec, bytes(100_000)).data)
    assert pool.idle == 1  # keep=1
