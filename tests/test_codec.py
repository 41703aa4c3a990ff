"""The sans-I/O codec: every message survives the wire however the bytes arrive; nothing else gets through.

Modelled on h11's ``tests/test_io.py``: each case is fed whole, byte by byte, in
random splits, with trailing bytes of the next frame and through the
``get_buffer``/``buffer_updated`` (``recv_into``) path. Plain synchronous
pytest and hypothesis; no trio.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import random
import re
import struct
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import messages as m
from common.codec import (
    CLOSED,
    EAGER_BODY_LIMIT,
    LARGE_FRAME,
    NEED_DATA,
    Codec,
    LargeFrame,
    chunk_data_prefix,
    decode_payload,
    encode_message,
)
from common.collection import Entry, sign_version
from common.errors import LocalProtocolError, RemoteProtocolError, ValidationError
from common.framing import DEFAULT_MAX_FRAME_SIZE, HEADER, HEADER_SIZE, MAGIC, PROTOCOL_VERSION, ErrorCode, Opcode
from common.identity import NodeKey
from common.lookup_messages import MAX_LOOKUP
from common.manifest import MAX_CHUNKS, Manifest, build_manifest, sha256, validate_name
from common.torrent_messages import MAX_TORRENTS_LISTED

PROTOCOL_MD = pathlib.Path(__file__).resolve().parent.parent / "common" / "PROTOCOL.md"
PREFIX = struct.Struct(">32sI")  # REQUEST_CHUNK / CANCEL_CHUNK / CHUNK_DATA, per PROTOCOL.md
FILE_ID = bytes(range(32))
PEER_ID = b"P" * 20


# ---------------------------------------------------------------------------
# Strategies: a valid instance of every message class
# ---------------------------------------------------------------------------
peer_ids = st.binary(min_size=20, max_size=20)
file_ids = st.binary(min_size=32, max_size=32)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 2**32 - 1)
ports = st.integers(1, 0xFFFF)
chunk_indexes = st.integers(0, MAX_CHUNKS - 1)
hosts = st.ip_addresses().map(str)
seconds = st.one_of(st.integers(0, 86_400), st.floats(0, 86_400))


def texts(max_size: int) -> st.SearchStrategy[str]:
    # hypothesis leaves out surrogates by default: they cannot be UTF-8 encoded (see test_unencodable_*).
    return st.text(max_size=max_size)


def _valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except ValidationError:
        return False
    return True


names = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="/\\"), min_size=1, max_size=40
).filter(_valid_name)


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    """Real manifests: hashed from generated content, or (up to 3000 chunks, so the
    frame takes the >= 64 KiB path) from generated chunk hashes."""
    chunk_size = draw(st.sampled_from([1024, 4096, 1 << 20]))
    seed = draw(st.integers(0, 2**32))
    if draw(st.booleans()):
        data = random_bytes(draw(st.integers(0, 20 * chunk_size)), seed)
        hashes = [sha256(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size)]
        size = len(data)
    else:
        count = draw(st.integers(0, 3000))
        pool = random_bytes(32 * count, seed)
        hashes = [pool[i : i + 32] for i in range(0, len(pool), 32)]
        size = count * chunk_size - draw(st.integers(0, chunk_size - 1)) if count else 0
    return Manifest.from_hashes(draw(names), size, chunk_size, hashes)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    bounds = sorted(draw(st.lists(st.integers(0, MAX_CHUNKS), unique=True, max_size=16)))
    del bounds[len(bounds) & ~1 :]
    return tuple(zip(bounds[::2], bounds[1::2], strict=False))


#: Chunk bytes: mostly small, often beyond LARGE_FRAME (64 KiB), up to 300 KiB.
chunk_bytes = st.one_of(
    st.binary(max_size=256),
    st.sampled_from([LARGE_FRAME - PREFIX.size - 1, LARGE_FRAME - PREFIX.size, 200 * 1024]).map(bytes),
    st.builds(random_bytes, st.integers(0, 300 * 1024), st.integers(0, 2**32)),
)
counter_values = st.one_of(st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False))

_COLLECTION_KEY = NodeKey.generate()
collection_versions = st.builds(
    lambda name, items, sequence: sign_version(
        _COLLECTION_KEY, name, sequence, bytes(32) if sequence == 1 else sha256(b"p"),
        [Entry(path, size, sha256(path.encode()), 0o644, size) for path, size in items.items()], [_COLLECTION_KEY.public_key],
    ),
    st.sampled_from(["photos", "set-1", "Ünï"]),
    st.dictionaries(st.sampled_from(["a", "b/c", "d/e/f.txt", "z"]), st.integers(0, 2**40), max_size=4),
    st.integers(1, 2**40),
)
capability_sets = st.dictionaries(st.from_regex(r"[a-z][a-z0-9._-]{0,31}", fullmatch=True), st.integers(0, 0xFFFF), max_size=6)
STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    m.Hello: st.builds(m.Hello, peer_ids, u16, st.integers(0, 255), texts(64), capability_sets, st.sampled_from([b"", b"c" * 32])),
    m.Welcome: st.builds(m.Welcome, peer_ids, seconds, hosts, u16, st.integers(0, 255), texts(64), capability_sets,
                         st.sampled_from([b"", b"c" * 32]), st.sampled_from([b"", b"k" * 32]), st.sampled_from([b"", b"s" * 64])),
    m.Register: st.builds(m.Register, ports),
    m.Deregister: st.just(m.Deregister()),
    m.Heartbeat: st.just(m.Heartbeat()),
    m.Ok: st.just(m.Ok()),
    m.Publish: st.builds(m.Publish, manifests()),
    m.Published: st.builds(m.Published, file_ids),
    m.Announce: st.builds(m.Announce, file_ids, ranges()),
    m.Withdraw: st.builds(m.Withdraw, file_ids, ranges()),
    m.Identify: st.builds(m.Identify, st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
    m.Unpublish: st.builds(m.Unpublish, file_ids),
    m.SwarmChallenge: st.builds(m.SwarmChallenge, st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32)),
    m.SwarmProof: st.builds(m.SwarmProof, st.binary(min_size=64, max_size=64), st.binary(min_size=32, max_size=32)),
    m.GetManifest: st.builds(m.GetManifest, file_ids),
    m.ManifestReply: st.builds(m.ManifestReply, manifests()),
    m.WhoHas: st.builds(m.WhoHas, file_ids, st.integers(1, m.MAX_HOLDERS)),
    m.Holders: st.builds(
        m.Holders, file_ids, st.lists(st.builds(m.Holder, peer_ids, hosts, ports, st.binary(max_size=64)), max_size=5)
    ),
    m.ListFiles: st.builds(m.ListFiles, texts(255), st.integers(1, m.MAX_LIST)),
    m.FileList: st.builds(
        m.FileList,
        st.lists(
            st.builds(
                m.FileEntry, file_ids, texts(1024), st.integers(0, 2**63 - 1), u32, st.integers(0, MAX_CHUNKS), u32, u32
            ),
            max_size=4,
        ),
        u32,
    ),
    m.Lookup: st.builds(m.Lookup, texts(255).filter(bool), st.integers(1, MAX_LOOKUP)),
    m.ListTorrents: st.builds(m.ListTorrents, st.integers(1, MAX_TORRENTS_LISTED)),
    m.TorrentList: st.builds(
        m.TorrentList, st.lists(st.builds(m.TorrentEntry, st.binary(min_size=20, max_size=20), u32, u32, u32), max_size=4), u32
    ),
    m.Stats: st.just(m.Stats()),
    m.StatsReply: st.builds(m.StatsReply, st.lists(st.tuples(texts(64), counter_values), max_size=8)),
    m.RequestChunk: st.builds(m.RequestChunk, file_ids, chunk_indexes),
    m.ChunkData: st.builds(m.ChunkData, file_ids, chunk_indexes, chunk_bytes),
    m.ChunkError: st.builds(m.ChunkError, file_ids, u32, u16, texts(1024)),
    m.CancelChunk: st.builds(m.CancelChunk, file_ids, chunk_indexes),
    m.Error: st.builds(m.Error, u16, texts(1024), st.one_of(st.just(0), st.integers(1, 2**63 - 1))),
    m.PublishCollection: st.builds(m.PublishCollection, collection_versions),
    m.GetCollection: st.builds(m.GetCollection, st.sampled_from(["photos", "a b", "Ünï"])),
    m.WatchCollection: st.builds(m.WatchCollection, st.sampled_from(["photos", "x"]), st.sampled_from([b"", b"r" * 32]), seconds),
    m.CollectionReply: st.builds(m.CollectionReply, st.none() | collection_versions),
}
MESSAGE_CLASSES = sorted(STRATEGIES, key=lambda cls: cls.OPCODE)
RAW_CLASSES = (m.RequestChunk, m.CancelChunk, m.ChunkData)
MSGPACK_CLASSES = [cls for cls in MESSAGE_CLASSES if cls not in RAW_CLASSES]
messages = st.one_of(*STRATEGIES.values())
small_messages = st.one_of(
    st.builds(m.ChunkData, file_ids, chunk_indexes, st.binary(max_size=256)),
    *(STRATEGIES[cls] for cls in MESSAGE_CLASSES if cls not in (m.Publish, m.ManifestReply, m.ChunkData)),
)


def test_every_message_class_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(m.MESSAGE_TYPES.values())


# ---------------------------------------------------------------------------
# Feeding helpers
# ---------------------------------------------------------------------------
def drain(codec: Codec) -> list[Any]:
    """Every event available now: messages, then CLOSED once after a clean EOF."""
    events: list[Any] = []
    while (event := codec.next_event()) is not NEED_DATA:
        events.append(event)
        if event is CLOSED:
            break
    return events


def feed(codec: Codec, pieces: Iterable[bytes | memoryview]) -> list[Any]:
    """receive_data each piece (an empty piece is EOF) and drain after each, as a shell does."""
    events: list[Any] = []
    for piece in pieces:
        codec.receive_data(piece)
        events += drain(codec)
    return events


def feed_into(codec: Codec, data: bytes, read_size: int) -> tuple[list[Any], int]:
    """Deliver ``data`` as a shell using ``recv_into`` would: into ``get_buffer()`` when
    it offers a view, else through ``receive_data``. Returns the events and how many
    reads went straight into the codec's buffer."""
    events: list[Any] = []
    direct = 0
    view = memoryview(data)
    while view:
        # ``target`` deliberately outlives its read, as a shell's local or a traceback may.
        target = codec.get_buffer()
        if target is None:
            count = min(read_size, len(view))
            codec.receive_data(bytes(view[:count]))
        else:
            assert len(target) > 0, "get_buffer offered an empty view (recv_into would read it as EOF)"
            count = min(read_size, len(view), len(target))
            target[:count] = view[:count]
            codec.buffer_updated(count)
            direct += 1
        view = view[count:]
        events += drain(codec)
    return events, direct


def split_at(data: bytes, points: Iterable[int]) -> list[bytes]:
    cuts = [0, *sorted(points), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(cuts) if b > a]


def byte_by_byte(data: bytes) -> Iterator[bytes]:
    return (data[i : i + 1] for i in range(len(data)))


def frame(opcode: int, payload: bytes, *, magic: bytes = MAGIC, version: int = PROTOCOL_VERSION) -> bytes:
    return HEADER.pack(magic, version, opcode, len(payload)) + payload


def assert_refused(codec: Codec) -> None:
    """After a protocol error the codec refuses every further use."""
    for use in (
        lambda: codec.receive_data(b"CS"),
        lambda: codec.receive_data(b""),
        codec.next_event,
        codec.get_buffer,
        lambda: codec.buffer_updated(1),
    ):
        with pytest.raises(RemoteProtocolError, match="unusable"):
            use()


def remote_error(data: Iterable[bytes], code: int | None = None) -> RemoteProtocolError:
    """Feed ``data`` and return the RemoteProtocolError it must cause; check the codec is then dead."""
    codec = Codec()
    with pytest.raises(RemoteProtocolError) as info:
        feed(codec, data)
    assert info.value.reason
    if code is not None:
        assert info.value.error_code == code
    assert_refused(codec)
    return info.value


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_round_trip_whole_split_and_into(cls: type, data: st.DataObject) -> None:
    message = data.draw(STRATEGIES[cls])
    wire = encode_message(message)
    assert wire[:2] == MAGIC and wire[2] == PROTOCOL_VERSION and wire[3] == cls.OPCODE
    assert int.from_bytes(wire[4:8], "big") == len(wire) - HEADER_SIZE
    assert decode_payload(cls.OPCODE, wire[HEADER_SIZE:]) == message

    # Whole, then a clean EOF.
    assert feed(Codec(), [wire, b""]) == [message, CLOSED]
    # Random splits.
    points = data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=12), label="splits")
    assert feed(Codec(), [*split_at(wire, points), b""]) == [message, CLOSED]
    # recv_into through get_buffer/buffer_updated, then EOF as a 0-byte read.
    codec = Codec()
    read_sizes = [1, 7, 4096, 65536, 1 << 20] if len(wire) < 8192 else [997, 4096, 65536, 1 << 20]
    read_size = data.draw(st.sampled_from(read_sizes), label="read_size")
    events, direct = feed_into(codec, wire, read_size)
    assert events == [message]
    if len(wire) - HEADER_SIZE >= LARGE_FRAME and 2 * read_size < len(wire):
        assert direct > 0  # the header arrived before the body: the body was offered for recv_into
    codec.buffer_updated(0)
    assert drain(codec) == [CLOSED]
    assert codec.buffered == 0


@settings(max_examples=150, deadline=None)
@given(message=small_messages)
def test_round_trip_byte_by_byte(message: Any) -> None:
    wire = encode_message(message)
    codec = Codec()
    events = feed(codec, byte_by_byte(wire[:-1]))
    assert events == [] and codec.buffered == len(wire) - 1
    assert feed(codec, [wire[-1:], b""]) == [message, CLOSED]


def test_large_frame_byte_by_byte() -> None:
    message = m.ChunkData(FILE_ID, 3, random_bytes(LARGE_FRAME + 100, 1))
    assert feed(Codec(), byte_by_byte(encode_message(message))) == [message]


@settings(max_examples=60, deadline=None)
@given(first=messages, second=messages, data=st.data())
def test_trailing_bytes_of_the_next_frame(first: Any, second: Any, data: st.DataObject) -> None:
    wire, following = encode_message(first), encode_message(second)
    keep = data.draw(st.integers(1, len(following) - 1), label="trailing")
    codec = Codec()
    assert feed(codec, [wire + following[:keep]]) == [first]
    assert codec.buffered == keep
    assert feed(codec, [following[keep:], b""]) == [second, CLOSED]


@settings(max_examples=40, deadline=None)
@given(batch=st.lists(messages, min_size=1, max_size=6), data=st.data())
def test_pipelined_frames_in_any_split(batch: list[Any], data: st.DataObject) -> None:
    wire = b"".join(map(encode_message, batch))
    points = data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=20), label="splits")
    assert feed(Codec(), [*split_at(wire, points), b""]) == [*batch, CLOSED]
    read_size = data.draw(st.integers(1, 100_000), label="read_size")
    assert feed_into(Codec(), wire, read_size)[0] == batch


def test_frame_that_grows_past_the_eager_allocation() -> None:
    # Above EAGER_BODY_LIMIT the body buffer grows as bytes arrive.
    message = m.ChunkData(FILE_ID, 9, random_bytes(EAGER_BODY_LIMIT * 2 + 12345, 2))
    wire = encode_message(message)
    assert feed(Codec(), split_at(wire, random.Random(3).sample(range(1, len(wire)), 40))) == [message]
    events, direct = feed_into(Codec(), wire, 300_000)
    assert events == [message] and direct > 1


def test_chunk_data_views_survive_the_next_frame() -> None:
    first = m.ChunkData(FILE_ID, 1, random_bytes(LARGE_FRAME * 2, 4))
    second = m.ChunkData(FILE_ID, 2, random_bytes(LARGE_FRAME * 2, 5))
    events, _ = feed_into(Codec(), encode_message(first) + encode_message(second), 10_000)
    assert events == [first, second]
    assert bytes(events[0].data) == first.data


def test_real_manifest_round_trips(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(random_bytes(5 * 1024 + 17, 6))
    manifest = build_manifest(path, 1024)
    for message in (m.Publish(manifest), m.ManifestReply(manifest)):
        (decoded,) = feed(Codec(), byte_by_byte(encode_message(message)))
        assert decoded == message
        decoded.manifest.verify()


def test_chunk_data_prefix_matches_encode_message() -> None:
    data = random_bytes(1000, 7)
    assert chunk_data_prefix(FILE_ID, 5, len(data)) + data == encode_message(m.ChunkData(FILE_ID, 5, data))
    assert Codec().chunk_data_prefix(FILE_ID, 5, len(data)) + data == encode_message(m.ChunkData(FILE_ID, 5, data))


def test_known_wire_bytes() -> None:
    """Pin the encoding that PROTOCOL.md documents, byte for byte."""
    assert encode_message(m.Register(6881)) == b"CS\x01\x03\x00\x00\x00\x04" + b"\x91\xcd\x1a\xe1"
    assert encode_message(m.Ok()) == b"CS\x01\x06\x00\x00\x00\x01\x90"
    assert encode_message(m.Hello(PEER_ID, 6881)) == (
        b"CS\x01\x01\x00\x00\x00\x1c" + b"\x94\xc4\x14" + PEER_ID + b"\xcd\x1a\xe1\x01\xa0"
    )
    assert encode_message(m.RequestChunk(FILE_ID, 7)) == b"CS\x01\x20\x00\x00\x00\x24" + FILE_ID + b"\x00\x00\x00\x07"
    assert encode_message(m.ChunkData(FILE_ID, 1, b"abc")) == (
        b"CS\x01\x21\x00\x00\x00\x27" + FILE_ID + b"\x00\x00\x00\x01abc"
    )
    assert encode_message(m.Announce(FILE_ID, [(0, 2), (5, 6)])) == (
        b"CS\x01\x12\x00\x00\x00\x2a" + b"\x92\xc4\x20" + FILE_ID + b"\x92\x92\x00\x02\x92\x05\x06"
    )
    # Announce's fields under another opcode (PROTOCOL.md §8.5, whose vector test_handshake.py pins).
    assert encode_message(m.Withdraw(FILE_ID, [(0, 2), (5, 6)])) == (
        b"CS\x01\x1b\x00\x00\x00\x2a" + b"\x92\xc4\x20" + FILE_ID + b"\x92\x92\x00\x02\x92\x05\x06"
    )


def test_protocol_doc_lists_every_opcode_and_error_code() -> None:
    text = PROTOCOL_MD.read_text()
    for op in Opcode:
        assert re.search(rf"\|\s*`?0x{op.value:02X}`?\s*\|\s*`?{op.name}`?\s*\|", text), op.name
    for code in ErrorCode:
        assert re.search(rf"\|\s*{code.value}\s*\|\s*`?{code.name}`?\s*\|", text), code.name


# ---------------------------------------------------------------------------
# End of stream
# ---------------------------------------------------------------------------
def test_clean_eof() -> None:
    codec = Codec()
    assert feed(codec, [b""]) == [CLOSED]
    assert codec.next_event() is CLOSED
    with pytest.raises(LocalProtocolError):
        codec.receive_data(b"more")


def test_eof_after_buffered_frames_delivers_them_first() -> None:
    wire = encode_message(m.Heartbeat()) + encode_message(m.Stats())
    codec = Codec()
    codec.receive_data(wire)
    codec.receive_data(b"")
    assert drain(codec) == [m.Heartbeat(), m.Stats(), CLOSED]


SAMPLES = [
    encode_message(m.Hello(PEER_ID, 1, agent="agent")),
    encode_message(m.RequestChunk(FILE_ID, 1)),
    encode_message(m.Ok()),
]


@pytest.mark.parametrize("wire", SAMPLES, ids=["hello", "request", "ok"])
def test_truncation_at_every_offset(wire: bytes) -> None:
    for cut in range(1, len(wire)):
        assert "truncated" in remote_error([wire[:cut], b""], ErrorCode.BAD_REQUEST).reason
    # After a complete frame, a partial next one: the first still arrives.
    codec = Codec()
    with pytest.raises(RemoteProtocolError, match="truncated"):
        feed(codec, [wire + wire[:3], b""])


@settings(max_examples=30, deadline=None)
@given(size=st.integers(LARGE_FRAME, 300 * 1024), data=st.data())
def test_truncated_large_frame(size: int, data: st.DataObject) -> None:
    wire = encode_message(m.ChunkData(FILE_ID, 0, bytes(size)))
    cut = data.draw(st.integers(1, len(wire) - 1))
    remote_error([wire[:cut], b""], ErrorCode.BAD_REQUEST)
    codec = Codec()
    feed_into(codec, wire[:cut], 8192)
    if codec.get_buffer() is None:
        codec.receive_data(b"")
    else:
        codec.buffer_updated(0)  # a 0-byte recv_into
    with pytest.raises(RemoteProtocolError, match="truncated"):
        codec.next_event()
    assert_refused(codec)


# ---------------------------------------------------------------------------
# Bad headers, and lengths that must not be believed
# ---------------------------------------------------------------------------
@settings(max_examples=100)
@given(garbage=st.binary(min_size=HEADER_SIZE).filter(lambda b: b[:2] != MAGIC))
def test_garbage_is_refused(garbage: bytes) -> None:
    assert "magic" in remote_error([garbage], ErrorCode.BAD_REQUEST).reason
    remote_error(byte_by_byte(garbage), ErrorCode.BAD_REQUEST)


@settings(max_examples=300)
@given(stream=st.binary(max_size=300))
def test_any_bytes_give_messages_or_a_remote_error(stream: bytes) -> None:
    codec = Codec()
    try:
        events = feed(codec, [MAGIC + bytes([PROTOCOL_VERSION]) + stream, b""])
    except RemoteProtocolError as exc:
        assert exc.reason
    else:
        assert events[-1] is CLOSED


@pytest.mark.parametrize("version", [0, PROTOCOL_VERSION + 1, 255])
def test_bad_version(version: int) -> None:
    error = remote_error([frame(Opcode.OK, b"\x90", version=version)], ErrorCode.UNSUPPORTED_VERSION)
    assert str(version) in error.reason


@given(opcode=st.integers(0, 255).filter(lambda op: op not in set(Opcode)))
def test_unknown_opcode(opcode: int) -> None:
    assert "opcode" in remote_error([frame(opcode, b"\x90")], ErrorCode.BAD_REQUEST).reason


@given(length=st.one_of(st.integers(DEFAULT_MAX_FRAME_SIZE + 1, 2**32 - 1), st.just(2**32 - 1)))
def test_oversize_length_is_refused_before_buffering(length: int) -> None:
    codec = Codec()
    tracemalloc.start()
    try:
        codec.receive_data(HEADER.pack(MAGIC, PROTOCOL_VERSION, Opcode.CHUNK_DATA, length) + b"x" * 100)
        with pytest.raises(RemoteProtocolError) as info:
            codec.next_event()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.error_code == ErrorCode.FRAME_TOO_LARGE
    assert peak < 64 * 1024
    assert codec.buffered == 0
    assert_refused(codec)


def test_smaller_frame_limit() -> None:
    codec = Codec(max_frame_size=1000)
    assert feed(codec, [frame(Opcode.CHUNK_DATA, PREFIX.pack(FILE_ID, 0) + bytes(1000 - PREFIX.size))])
    with pytest.raises(RemoteProtocolError):
        feed(codec, [HEADER.pack(MAGIC, PROTOCOL_VERSION, Opcode.CHUNK_DATA, 1001)])


def test_a_header_alone_does_not_reserve_its_claimed_length() -> None:
    # The largest legal frame: its header must not make the codec allocate 16 MiB up front.
    codec = Codec()
    tracemalloc.start()
    try:
        codec.receive_data(HEADER.pack(MAGIC, PROTOCOL_VERSION, Opcode.CHUNK_DATA, DEFAULT_MAX_FRAME_SIZE))
        assert codec.next_event() is NEED_DATA
        view = codec.get_buffer()
        assert view is not None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(view) < DEFAULT_MAX_FRAME_SIZE // 4
    assert peak < DEFAULT_MAX_FRAME_SIZE // 4
    assert codec.buffered == HEADER_SIZE


# ---------------------------------------------------------------------------
# Bad payloads
# ---------------------------------------------------------------------------
MALFORMED_MSGPACK = {
    "reserved byte": b"\xc1",
    "truncated array": b"\x92\x01",
    "extra data": b"\x90\x01",
    "not an array": b"\x01",
    "a map": b"\x81\xa1k\x01",
    "bad utf-8": b"\x91\xa1\xff",
    "huge array claim": b"\xdd\xff\xff\xff\xff",
    "too deep": b"\x91" * 5000 + b"\x90",
    "ext type": msgpack.packb(msgpack.ExtType(1, b"ab")),
    "empty": b"",
}


@pytest.mark.parametrize("cls", MSGPACK_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("payload", MALFORMED_MSGPACK.values(), ids=list(MALFORMED_MSGPACK))
def test_malformed_msgpack(cls: type, payload: bytes) -> None:
    error = remote_error([frame(cls.OPCODE, payload)], ErrorCode.BAD_REQUEST)
    assert cls.OPCODE.name in error.reason


def attrs_field_count(cls: type) -> int:
    return len(cls.__attrs_attrs__)  # type: ignore[attr-defined]


BAD_RAW_LENGTHS = [
    *((cls, length) for cls in (m.RequestChunk, m.CancelChunk) for length in (0, 1, PREFIX.size - 1, PREFIX.size + 1)),
    *((m.ChunkData, length) for length in (0, 1, PREFIX.size - 1)),  # any longer payload is a ChunkData
]


@pytest.mark.parametrize(("cls", "length"), BAD_RAW_LENGTHS, ids=str)
def test_wrong_raw_payload_length(cls: type, length: int) -> None:
    remote_error([frame(cls.OPCODE, bytes(length))], ErrorCode.BAD_REQUEST)


@pytest.mark.parametrize("cls", RAW_CLASSES, ids=lambda cls: cls.__name__)
def test_raw_chunk_index_out_of_range(cls: type) -> None:
    remote_error([frame(cls.OPCODE, PREFIX.pack(FILE_ID, MAX_CHUNKS))], ErrorCode.BAD_REQUEST)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_missing_fields_are_refused_and_trailing_ones_ignored(data: st.DataObject) -> None:
    # The growth rule (common/fields.py, PROTOCOL.md §2): a newer sender may append fields.
    cls = data.draw(st.sampled_from(MSGPACK_CLASSES))
    message = data.draw(STRATEGIES[cls])
    fields = message.to_fields()
    every_field = fields + [getattr(message, a.name) for a in attrs.fields(cls)[len(fields) :]]  # later ones at their defaults
    extra = data.draw(st.lists(st.one_of(st.integers(0, 2**32), st.text(max_size=8), st.binary(max_size=8)), min_size=1, max_size=3))
    codec = Codec()
    assert feed(codec, [frame(cls.OPCODE, msgpack.packb([*every_field, *extra]))]) == [message]
    required = cls.REQUIRED if getattr(cls, "REQUIRED", None) is not None else len(attrs.fields(cls))
    if required:
        remote_error([frame(cls.OPCODE, msgpack.packb(every_field[: required - 1]))], ErrorCode.BAD_REQUEST)


def _nodes(value: Any, path: tuple[int, ...] = ()) -> Iterator[tuple[int, ...]]:
    """Paths to every element of nested lists/tuples (the field tree of a message)."""
    for i, item in enumerate(value):
        yield (*path, i)
        if isinstance(item, (list, tuple)):
            yield from _nodes(item, (*path, i))


def _replace(value: Any, path: tuple[int, ...], new: Any) -> list[Any]:
    out = list(value)
    out[path[0]] = new if len(path) == 1 else _replace(out[path[0]], path[1:], new)
    return out


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_every_field_is_type_checked(data: st.DataObject) -> None:
    """Replace any field, or any element of a nested field, with nil or a boolean: always refused."""
    cls = data.draw(st.sampled_from([c for c in MSGPACK_CLASSES if attrs_field_count(c)]))
    fields = data.draw(STRATEGIES[cls]).to_fields()
    path = data.draw(st.sampled_from(list(_nodes(fields))), label="path")
    wrong = data.draw(st.sampled_from([None, True]), label="wrong")
    payload = msgpack.packb(_replace(fields, path, wrong), use_bin_type=True)
    remote_error([frame(cls.OPCODE, payload)], ErrorCode.BAD_REQUEST)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=40)
    | st.binary(max_size=40) | st.sampled_from([FILE_ID, PEER_ID, "127.0.0.1", 6881, 1 << 20]),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=20,
)


def _decodes_or_refuses(opcode: Opcode, payload: bytes) -> None:
    codec = Codec()
    try:
        (message,) = feed(codec, [frame(opcode, payload)])
    except RemoteProtocolError as exc:
        assert exc.reason and exc.error_code == ErrorCode.BAD_REQUEST
        assert_refused(codec)
    else:
        # Whatever was accepted is a valid message that survives another round trip.
        assert message.OPCODE is opcode
        assert decode_payload(opcode, encode_message(message)[HEADER_SIZE:]) == message or _has_nan(message)


def _has_nan(message: Any) -> bool:
    return any(isinstance(v, float) and math.isnan(v) for pair in getattr(message, "counters", ()) for v in pair)


@settings(max_examples=300, deadline=None)
@given(opcode=st.sampled_from(list(Opcode)), payload=st.binary(max_size=200))
def test_valid_header_random_payload(opcode: Opcode, payload: bytes) -> None:
    _decodes_or_refuses(opcode, payload)


@settings(max_examples=120, deadline=None)
@given(opcode=st.sampled_from(list(Opcode)), fields=st.lists(msgpack_values, max_size=8))
def test_valid_header_random_msgpack_fields(opcode: Opcode, fields: list[Any]) -> None:
    _decodes_or_refuses(opcode, msgpack.packb(fields, use_bin_type=True))


# ---------------------------------------------------------------------------
# Sending invalid things
# ---------------------------------------------------------------------------
INVALID_MESSAGES = {
    "short peer id": lambda: m.Hello(b"short"),
    "port too big": lambda: m.Hello(PEER_ID, 70_000),
    "long agent": lambda: m.Hello(PEER_ID, agent="x" * 65),
    "negative heartbeat": lambda: m.Welcome(PEER_ID, -1),
    "nan heartbeat": lambda: m.Welcome(PEER_ID, float("nan")),
    "host not an IP": lambda: m.Welcome(PEER_ID, 1, "example.com"),
    "port 0": lambda: m.Register(0),
    "bool port": lambda: m.Register(True),
    "empty range": lambda: m.Announce(FILE_ID, [(5, 5)]),
    "overlapping ranges": lambda: m.Announce(FILE_ID, [(3, 5), (4, 6)]),
    "descending ranges": lambda: m.Announce(FILE_ID, [(4, 6), (0, 2)]),
    "range beyond MAX_CHUNKS": lambda: m.Announce(FILE_ID, [(0, MAX_CHUNKS + 1)]),
    "withdraw: empty range": lambda: m.Withdraw(FILE_ID, [(5, 5)]),
    "withdraw: overlapping ranges": lambda: m.Withdraw(FILE_ID, [(3, 5), (4, 6)]),
    "withdraw: ranges not pairs": lambda: m.Withdraw(FILE_ID, [(1, 2, 3)]),
    "negative index": lambda: m.RequestChunk(FILE_ID, -1),
    "index MAX_CHUNKS": lambda: m.CancelChunk(FILE_ID, MAX_CHUNKS),
    "short file id": lambda: m.RequestChunk(FILE_ID[:31], 0),
    "text chunk data": lambda: m.ChunkData(FILE_ID, 0, "text"),
    "chunk error index": lambda: m.ChunkError(FILE_ID, 2**32, ErrorCode.NOT_HELD),
    "error code": lambda: m.Error(70_000),
    "long error text": lambda: m.Error(1, "x" * 1025),
    "zero max peers": lambda: m.WhoHas(FILE_ID, 0),
    "zero limit": lambda: m.ListFiles(limit=0),
    "empty lookup": lambda: m.Lookup(""),
    "lookup limit above MAX_LOOKUP": lambda: m.Lookup("x", MAX_LOOKUP + 1),
    "negative more": lambda: m.FileList((), -1),
    "holder not a Holder": lambda: m.Holders(FILE_ID, [object()]),
    "holder bad host": lambda: m.Holder(PEER_ID, "::g", 1, b""),
    "counter not a number": lambda: m.StatsReply({"x": "1"}),
    "long counter name": lambda: m.StatsReply({"x" * 65: 1}),
    "negative size": lambda: m.FileEntry(FILE_ID, "f", -1, 1024, 0, 0, 0),
}


@pytest.mark.parametrize("build", INVALID_MESSAGES.values(), ids=list(INVALID_MESSAGES))
def test_invalid_messages_cannot_be_built(build: Any) -> None:
    with pytest.raises(ValidationError):
        build()


@pytest.mark.parametrize(
    "message",
    [
        m.StatsReply({"too big": 2**64}),
        m.StatsReply({"too small": -(2**63) - 1}),
        m.Hello(PEER_ID, agent="\ud800"),
        m.Error(1, "lone surrogate \udc80"),
    ],
    ids=["u64 overflow", "i64 underflow", "surrogate agent", "surrogate text"],
)
def test_unencodable_values_are_local_errors(message: Any) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(message)


def test_manifest_messages_need_a_manifest() -> None:
    with pytest.raises(TypeError):  # attrs' instance_of: a programming error, never from the wire
        m.Publish("manifest")  # type: ignore[arg-type]


def test_sending_non_messages_and_oversize_frames() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(m.Holder(PEER_ID, "::1", 1, b""))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Codec().send(object())  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Codec(max_frame_size=1000).send(m.ChunkData(FILE_ID, 0, bytes(1000)))
    with pytest.raises(LocalProtocolError):
        chunk_data_prefix(FILE_ID, 0, DEFAULT_MAX_FRAME_SIZE)
    # The largest chunk fits the default limit.
    assert len(chunk_data_prefix(FILE_ID, 0, 16 * 1024 * 1024)) == HEADER_SIZE + PREFIX.size


def test_large_frame_bodies_come_from_the_given_allocator() -> None:
    """A downloader's pool supplies chunk bodies; the chunk arrives as a view of that very buffer."""
    data = random.Random(3).randbytes(LARGE_FRAME + 100)
    frame = encode_message(m.ChunkData(b"\x01" * 32, 4, data))
    made: list[bytearray] = []

    def allocate(size: int) -> bytearray:
        made.append(bytearray(b"\xee" * size))  # stale content: every byte must be overwritten
        return made[-1]

    codec = Codec(allocate_body=allocate)
    events, direct = feed_into(codec, frame + frame, 4096)
    assert [e.index for e in events] == [4, 4] and all(bytes(e.data) == data for e in events)
    assert len(made) == 2 and direct > 0
    assert events[0].data.obj is made[0] and events[1].data.obj is made[1]


def test_an_allocator_of_the_wrong_size_is_a_local_error() -> None:
    frame = encode_message(m.ChunkData(b"\x01" * 32, 4, bytes(LARGE_FRAME)))
    codec = Codec(allocate_body=lambda size: bytearray(size + 1))
    codec.receive_data(frame)
    with pytest.raises(LocalProtocolError, match="allocate_body"):
        codec.next_event()


def test_a_codec_that_defers_large_frames_hands_them_over_undecoded() -> None:
    """``defer_large``: a frame of LARGE_FRAME bytes or more comes out as a LargeFrame, whole, for decode_payload elsewhere."""
    big = m.Publish(build_manifest_of_hashes(LARGE_FRAME // 32 + 1))
    small = m.Stats()
    codec = Codec(defer_large=True)
    codec.receive_data(encode_message(small) + encode_message(big) + encode_message(small))
    first, deferred, last = codec.next_event(), codec.next_event(), codec.next_event()
    assert first == small == last and codec.next_event() is NEED_DATA
    assert isinstance(deferred, LargeFrame) and deferred.opcode == Opcode.PUBLISH
    assert decode_payload(deferred.opcode, deferred.payload) == big


def build_manifest_of_hashes(count: int) -> Manifest:
    hashes = [sha256(i.to_bytes(4, "big")) for i in range(count)]
    return Manifest.from_hashes("large.bin", count * 1024, 1024, hashes)
