"""Finding 1 of issue 12, the peer hijack: a peer's id, readable by anyone, no longer lets anyone act as that peer.

A real tracker and real peers over 127.0.0.1. The attacker reads the
seeder's peer id as anyone can (WHO_HAS), then says HELLO with it from the
same host and sends DEREGISTER, or REGISTER to another port. Before node
identities both worked and ``get`` failed while the seeder ran; now the
seeder's record is bound to its key and the attacker gets IDENTITY_CONFLICT.
"""

from __future__ import annotations

import pathlib

import trio

from common.errors import Refused
from common.framing import ErrorCode
from common.identity import NodeKey
from common.messages import Deregister, Error, Heartbeat, Hello, Holders, Message, Ok, Register, WhoHas
from peer.connection import Connection
from peer.greeting import connect_tcp, open_greeted
from tests.test_peer_swarm import Swarm, source  # noqa: F401  (the fixture)
from tracker.config import TrackerConfig
from tracker.service import serve_tracker


async def _ask(address: tuple[str, int], hello: Hello, *requests: Message) -> list[Message]:
    """Say ``hello`` (no capabilities: a protocol-1 client) on a fresh connection, then each request; the replies."""
    stream = await trio.open_tcp_stream(*address)
    conn = Connection(stream)
    try:
        await conn.send(hello)
        await conn.receive()  # WELCOME
        replies = []
        for request in requests:
            await conn.send(request)
            replies.append(await conn.receive())
        return replies
    finally:
        await conn.aclose()


async def _holder_ports(address: tuple[str, int], file_id: bytes) -> list[int]:
    (reply,) = await _ask(address, Hello(b"q" * 20), WhoHas(file_id))
    assert isinstance(reply, Holders)
    return [holder.port for holder in reply.holders]


async def test_a_peer_cannot_be_deregistered_or_moved_by_whoever_knows_its_id(
    nursery: trio.Nursery, tmp_path: pathlib.Path, source: pathlib.Path, state: str | None
) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, heartbeat_interval=1.0, peer_timeout=3.0, state=state))
    tracker = (running.host, running.port)
    swarm = Swarm(tracker, tmp_path)
    with trio.fail_after(30):
        async with swarm.peer() as seeder:
            (manifest,) = await seeder.publish([source.parent])
            port = seeder.listen_address[1]
            (holders,) = await _ask(tracker, Hello(b"q" * 20), WhoHas(manifest.file_id))
            assert isinstance(holders, Holders)
            (victim,) = [holder.peer_id for holder in holders.holders]  # anyone can read it
            # Hijack 1: HELLO with the victim's id, then DEREGISTER.
            (reply,) = await _ask(tracker, Hello(victim, port), Deregister())
            assert isinstance(reply, Error) and reply.code == ErrorCode.IDENTITY_CONFLICT, reply
            # Hijack 2: HELLO with the victim's id plus REGISTER to another port.
            (reply,) = await _ask(tracker, Hello(victim, 9), Register(9))
            assert isinstance(reply, Error) and reply.code == ErrorCode.IDENTITY_CONFLICT, reply
            # Nor a heartbeat in its name: the victim's record answers to its key only.
            (reply,) = await _ask(tracker, Hello(victim, port), Heartbeat())
            assert isinstance(reply, Error) and reply.code == ErrorCode.IDENTITY_CONFLICT, reply
            assert await _holder_ports(tracker, manifest.file_id) == [port]
            async with swarm.peer() as getter:
                result = await getter.download(manifest.name, tmp_path / "out")
                assert result.path.read_bytes() == source.read_bytes()


async def test_an_unidentified_peer_is_checked_by_host_and_port(nursery: trio.Nursery, state: str | None) -> None:
    """A protocol-1 peer moved to another port by someone on its host finds out at its next heartbeat, and re-registers."""
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, state=state))
    tracker = (running.host, running.port)
    victim = b"v" * 20
    stream = await trio.open_tcp_stream(*tracker)
    conn = Connection(stream)
    try:
        await conn.send(Hello(victim, 6881))
        await conn.receive()
        await conn.send(Register(6881))
        assert isinstance(await conn.receive(), Ok)
        (reply,) = await _ask(tracker, Hello(victim, 9), Register(9))  # the same host: allowed, as a reconnect is
        assert isinstance(reply, Ok)
        await conn.send(Heartbeat())
        reply = await conn.receive()
        assert isinstance(reply, Error) and reply.code == ErrorCode.NOT_REGISTERED  # the victim learns, and registers again
        await conn.send(Register(6881))
        assert isinstance(await conn.receive(), Ok)
        await conn.send(Heartbeat())
        assert isinstance(await conn.receive(), Ok)
    finally:
        await conn.aclose()


async def test_a_tracker_that_requires_identity_refuses_the_others_with_one_clear_error(nursery: trio.Nursery, state: str | None) -> None:
    running = await nursery.start(serve_tracker, TrackerConfig(port=0, db_path=None, require_identity=True, state=state))
    tracker = (running.host, running.port)
    stream = await trio.open_tcp_stream(*tracker)
    conn = Connection(stream)
    try:
        await conn.send(Hello(b"p" * 20, 6881))
        reply = await conn.receive()
    finally:
        await conn.aclose()
    assert isinstance(reply, Error) and reply.code == ErrorCode.IDENTITY_REQUIRED and "identified" in reply.message
    key = NodeKey.generate()
    conn, agreement = await open_greeted(connect_tcp, tracker, Hello(b"p" * 20, 6881), key=key)
    try:
        assert agreement.remote_node == running.service.config.node_key.node_id
        await conn.send(Register(6881))
        assert isinstance(await conn.receive(), Ok)
    finally:
        await conn.aclose()
    assert running.service.registry.get_peer(key.peer_id) is not None
    try:
        await open_greeted(connect_tcp, tracker, Hello(b"p" * 20, 6881))
    except Refused as exc:
        assert exc.code == ErrorCode.IDENTITY_REQUIRED
    else:
        raise AssertionError("a HELLO without identity was welcomed")
