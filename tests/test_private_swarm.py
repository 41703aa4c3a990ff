"""Private swarms over real loopback sockets: TLS, the proof of membership, refusals, a relay, --allow (PROTOCOL.md §8.8)."""

from __future__ import annotations

import logging
import os
import pathlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from common.allow import AllowList, parse_ranges
from common.codec import Codec
from common.errors import ConnectionClosed, TrackerError, TrackerUnavailable, ValidationError
from common.framing import ErrorCode
from common.identity import NodeKey
from common.messages import Error, Hello, ListFiles, Message, RequestChunk, SwarmChallenge, SwarmProof, Welcome
from common.swarm import Membership, SwarmFile, parse_swarm_file
from common.tls import client_context, server_context
from peer.config import PeerConfig
from peer.connection import Connection
from peer.node import Peer, open_peer
from peer.secure import CAPABILITIES, Private
from tracker.config import TrackerConfig
from tracker.service import serve_tracker

SIZE = 300_000


@pytest.fixture
def swarm_file() -> SwarmFile:
    return SwarmFile.create("office")


@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


async def start_tracker(nursery: trio.Nursery, **settings: object) -> tuple[str, int]:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, **settings))  # type: ignore[arg-type]
    return running.host, running.port


@asynccontextmanager
async def member(tracker: tuple[str, int], root: pathlib.Path, label: str, **settings: object) -> AsyncIterator[Peer]:
    config = PeerConfig(tracker=tracker, state_dir=root / label, label=label, stall_timeout=5.0, **settings)  # type: ignore[arg-type]
    async with open_peer(config) as peer:
        await peer.connect()
        yield peer


async def tls_client(address: tuple[str, int], *, source: str | None = None) -> Connection:
    stream = await open_from(address, source)
    tls = trio.SSLStream(stream, client_context())
    await tls.do_handshake()
    return Connection(tls, codec=Codec())


async def open_from(address: tuple[str, int], source: str | None) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        await sock.bind((source, 0))
    await sock.connect(address)
    return trio.SocketStream(sock)


async def greet(conn: Connection, key: NodeKey) -> Message:
    await conn.send(Hello(key.peer_id, listen_port=0, capabilities=CAPABILITIES))
    return await conn.receive()


async def refused(conn: Connection) -> Error:
    """The one ERROR the other side sends, then the end of the connection: nothing else arrives."""
    error = await conn.receive_within(5)
    assert isinstance(error, Error), error
    with pytest.raises(ConnectionClosed):
        await conn.receive_within(5)
    return error


# -- the swarm file ---------------------------------------------------------------
def test_swarm_file_round_trip_and_refusals(swarm_file: SwarmFile) -> None:
    listed = swarm_file.allow(NodeKey.generate().node_id)
    assert parse_swarm_file(listed.serialize()) == listed
    assert listed.secret.hex() not in listed.describe()
    for text in ("name = x\n", "secret = 00\n", "name = x\nsecret = zz\n", "name = x\nsecret = " + "00" * 32 + "\nallow = NOPE\n", "junk\n"):
        with pytest.raises(ValidationError):
            parse_swarm_file(text)


# -- members ----------------------------------------------------------------------
async def test_member_downloads_from_member_over_tls(nursery: trio.Nursery, swarm_file: SwarmFile, source: pathlib.Path,
                                                     tmp_path: pathlib.Path) -> None:  # fmt: skip
    tracker = await start_tracker(nursery, swarm=swarm_file)
    async with member(tracker, tmp_path, "a", swarm=swarm_file) as seeder:
        await seeder.publish([source])
        async with member(tracker, tmp_path, "b", swarm=swarm_file) as getter:
            result = await getter.download("data.bin", tmp_path / "out")
    assert (tmp_path / "out" / "data.bin").read_bytes() == source.read_bytes()
    assert sum(count.bytes for count in result.received.values()) == SIZE


async def test_private_peer_refuses_an_open_tracker(nursery: trio.Nursery, swarm_file: SwarmFile, tmp_path: pathlib.Path) -> None:
    tracker = await start_tracker(nursery)  # open
    with pytest.raises(TrackerUnavailable, match="TLS"):
        async with member(tracker, tmp_path, "a", swarm=swarm_file):
            pass


# -- non-members at the tracker -----------------------------------------------------
@pytest.mark.parametrize("who", ["no-secret", "wrong-secret", "not-listed"])
async def test_tracker_refuses_non_members(nursery: trio.Nursery, swarm_file: SwarmFile, who: str) -> None:
    insider = NodeKey.generate()
    tracker = await start_tracker(nursery, swarm=swarm_file.allow(insider.node_id))
    key = NodeKey.generate()
    conn = await tls_client(tracker)
    assert isinstance(await greet(conn, key), Welcome)
    if who == "no-secret":  # straight to the catalogue
        await conn.send(ListFiles("", 10))
    else:
        secret = os.urandom(32) if who == "wrong-secret" else swarm_file.secret
        await prove(conn, attrs.evolve(swarm_file, secret=secret), key)
    error = await refused(conn)
    assert error.code == ErrorCode.NOT_A_MEMBER
    # ... and the tracker serves on: a listed member is admitted.
    conn = await tls_client(tracker)
    await greet(conn, insider)
    await prove(conn, swarm_file.allow(insider.node_id), insider)
    assert isinstance(await conn.receive_within(5), SwarmProof)


async def prove(conn: Connection, swarm_file: SwarmFile, key: NodeKey) -> None:
    """Say a challenge and a proof made with ``swarm_file``'s secret (whatever the server's is)."""
    nonce = os.urandom(32)
    await conn.send(SwarmChallenge(nonce, key.public_key))
    theirs = await conn.receive_within(5)
    assert isinstance(theirs, SwarmChallenge)
    membership = Membership(swarm_file, key, "client", certificate_key=theirs.public_key, random=lambda n: nonce)
    membership.receive_challenge(theirs)
    await conn.send(membership.proof())


async def test_plain_client_is_refused_and_tracker_serves_on(nursery: trio.Nursery, swarm_file: SwarmFile) -> None:
    tracker = await start_tracker(nursery, swarm=swarm_file)
    plain = Connection(await trio.open_tcp_stream(*tracker))
    await plain.send(Hello(os.urandom(20), listen_port=0))
    error = await refused(plain)
    assert error.code == ErrorCode.NOT_A_MEMBER and "TLS" in error.message
    key = NodeKey.generate()
    conn = await tls_client(tracker)
    await greet(conn, key)
    await prove(conn, swarm_file, key)
    assert isinstance(await conn.receive_within(5), SwarmProof)


# -- non-members at a member's chunk server -------------------------------------------
@pytest.mark.parametrize("who", ["no-secret", "wrong-secret", "plain"])
async def test_chunk_server_refuses_non_members(nursery: trio.Nursery, swarm_file: SwarmFile, source: pathlib.Path,
                                                tmp_path: pathlib.Path, who: str) -> None:  # fmt: skip
    tracker = await start_tracker(nursery, swarm=swarm_file)
    async with member(tracker, tmp_path, "a", swarm=swarm_file) as seeder:
        (manifest,) = await seeder.publish([source])
        key = NodeKey.generate()
        if who == "plain":
            conn = Connection(await trio.open_tcp_stream(*seeder.listen_address))
            await conn.send(Hello(key.peer_id, listen_port=0))
        else:
            conn = await tls_client(seeder.listen_address)
            assert isinstance(await greet(conn, key), Welcome)
            if who == "no-secret":
                await conn.send(RequestChunk(manifest.file_id, 0))
            else:
                await prove(conn, attrs.evolve(swarm_file, secret=os.urandom(32)), key)
        error = await refused(conn)
        assert error.code == ErrorCode.NOT_A_MEMBER
        assert seeder.transfers.uploaded == {}


# -- a relay ---------------------------------------------------------------------------
@pytest.mark.parametrize("rewrite", [False, True])
async def test_relay_between_two_tls_sessions_fails(nursery: trio.Nursery, swarm_file: SwarmFile, tmp_path: pathlib.Path, rewrite: bool,
                                                    caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """A man in the middle with a TLS session to each side, forwarding messages; ``rewrite``: it names its own key."""
    caplog.set_level(logging.INFO, logger="tracker.private")
    tracker = await start_tracker(nursery, swarm=swarm_file)
    relay_key = NodeKey.generate()
    outcome: list[Message] = []

    async def relay(stream: trio.SocketStream) -> None:
        client = Connection(trio.SSLStream(stream, server_context(relay_key), server_side=True))
        server = await tls_client(tracker)

        async def pump(source: Connection, sink: Connection, to_client: bool) -> None:
            try:
                while True:
                    message = await source.receive()
                    if rewrite and to_client and isinstance(message, SwarmChallenge):
                        message = SwarmChallenge(message.nonce, relay_key.public_key)
                    if not to_client:
                        outcome.append(message)
                    await sink.send(message)
            except ConnectionClosed:
                await sink.aclose()

        async with trio.open_nursery() as pumps:
            pumps.start_soon(pump, client, server, False)
            pumps.start_soon(pump, server, client, True)

    listeners = await nursery.start(trio.serve_tcp, relay, 0)
    relay_address = ("127.0.0.1", listeners[0].socket.getsockname()[1])
    with pytest.raises((TrackerUnavailable, TrackerError), match="not a member"):
        async with member(relay_address, tmp_path, "a", swarm=swarm_file):
            pass
    # The tracker never admitted the relay, and the victim asked nothing through it.
    assert "admitted" not in caplog.text
    assert not any(isinstance(message, ListFiles) for message in outcome)


# -- --allow -------------------------------------------------------------------------------
async def test_tracker_allow_refuses_addresses_outside_the_range(nursery: trio.Nursery, swarm_file: SwarmFile) -> None:
    tracker = await start_tracker(nursery, host="0.0.0.0", allow=AllowList(parse_ranges(["127.0.0.2/32"])))
    target = ("127.0.0.1", tracker[1])
    outsider = Connection(await open_from(target, "127.0.0.1"))
    await outsider.send(Hello(os.urandom(20), listen_port=0))
    with pytest.raises(ConnectionClosed):
        await outsider.receive_within(5)
    insider = Connection(await open_from(target, "127.0.0.2"))
    await insider.send(Hello(os.urandom(20), listen_port=0))
    assert isinstance(await insider.receive_within(5), Welcome)


async def test_peer_allow_refuses_addresses_outside_the_range(nursery: trio.Nursery, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    tracker = await start_tracker(nursery)
    allow = AllowList(parse_ranges(["127.0.0.2"]))
    async with member(tracker, tmp_path, "a", allow=allow, listen_host="0.0.0.0") as seeder:
        port = seeder.listen_address[1]
        outsider = Connection(await open_from(("127.0.0.1", port), "127.0.0.1"))
        await outsider.send(Hello(os.urandom(20), listen_port=0))
        with pytest.raises(ConnectionClosed):
            await outsider.receive_within(5)
        insider = Connection(await open_from(("127.0.0.1", port), "127.0.0.2"))
        await insider.send(Hello(os.urandom(20), listen_port=0))
        assert isinstance(await insider.receive_within(5), Welcome)


def test_allow_list_parsing() -> None:
    allow = AllowList(parse_ranges(["10.0.0.0/8", "fd00::/8"]))
    assert allow.admits("10.1.2.3") and allow.admits("::ffff:10.0.0.1") and allow.admits("fd00::1")
    assert not allow.admits("192.168.1.1") and not allow.admits("example.org")
    assert AllowList().admits("192.168.1.1")
    with pytest.raises(ValidationError, match="--allow"):
        parse_ranges(["10.0.0.0/33"])


def test_private_is_built_once_per_node(swarm_file: SwarmFile) -> None:
    private = Private.create(swarm_file, NodeKey.generate())
    assert private.server is not private.client
