"""The handshake state machines and how the protocol grows (common/handshake.py, PROTOCOL.md §8).

The byte vectors are read from PROTOCOL.md §8.4 and §8.5 themselves, so the
page and the code cannot drift apart.
"""

from __future__ import annotations

import pathlib
import re

import attrs
import msgpack
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from common.capabilities import BITTORRENT, COLLECTIONS, GATEWAY, KNOWN, LOOKUP, MAX_CAPABILITIES, WITHDRAW, agree, check_agreement
from common.codec import Codec, decode_payload, encode_message
from common.collection import Entry, check_successor, sign_version
from common.errors import Busy, LocalProtocolError, Refused, RemoteProtocolError, ValidationError
from common.framing import HEADER_SIZE, ErrorCode, Opcode
from common.handshake import RETRY_PLAIN, Agreement, ClientHandshake, HandshakeState, ServerHandshake
from common.identity import NodeKey, peer_id_of
from common.messages import (
    CollectionReply,
    Error,
    FileEntry,
    FileList,
    GetCollection,
    Hello,
    Identify,
    ListTorrents,
    Lookup,
    Message,
    Ok,
    PublishCollection,
    Register,
    SwarmChallenge,
    SwarmProof,
    TorrentEntry,
    TorrentList,
    Unpublish,
    WatchCollection,
    Welcome,
    Withdraw,
)
from common.swarm import SWARM, swarm_mac, transcript
from peer.greeting import Connect, open_greeted

PROTOCOL_MD = pathlib.Path(__file__).resolve().parent.parent / "common" / "PROTOCOL.md"
P = b"P" * 20
T = b"T" * 20
F = b"F" * 32
#: The WELCOME a server fills in (PROTOCOL.md §8.4: observed 127.0.0.1:6881, heartbeat 30).
TEMPLATE = Welcome(T, 30, "127.0.0.1", 6881)

OLD_HELLO = Hello(P, 6881)
OLD_WELCOME = TEMPLATE
NEW_HELLO = Hello(P, 6881, capabilities={"x-demo": 2})
NEW_WELCOME = Welcome(T, 30, "127.0.0.1", 6881, capabilities={"x-demo": 1})
#: What a protocol-1 server (as first specified: exact field counts) answers NEW_HELLO before it closes.
OLD_SERVER_REFUSAL = Error(ErrorCode.BAD_REQUEST, "malformed HELLO payload: Hello needs 4 fields, got 5")


def _doc_vectors(heading: str = "### 8.4 Test vectors") -> list[bytes]:
    """The frames of the first code block after ``heading`` in PROTOCOL.md, in order, with P, T, F and "text" expanded."""
    text = PROTOCOL_MD.read_text()
    section = text[text.index(heading) :]
    block = section[section.index("```") + 3 :]
    block = block[: block.index("```")]
    frames = []
    for line in block.splitlines():
        if "|" not in line:
            continue
        header, payload = line.split("|", 1)
        data = bytes.fromhex(" ".join(header.split()[-8:]))
        for token in re.findall(r'"[^"]*"|\S+', payload):
            if token == "P":
                data += P
            elif token == "T":
                data += T
            elif token == "F":
                data += F
            elif token in ("C", "S"):  # §8.6's challenges
                data += token.encode() * 32
            elif token.startswith('"'):
                data += token[1:-1].encode()
            else:
                data += bytes.fromhex(token)
        frames.append(data)
    return frames


def test_the_doc_vectors_are_the_encoding() -> None:
    expected = [OLD_HELLO, OLD_WELCOME, NEW_HELLO, NEW_WELCOME, OLD_SERVER_REFUSAL]
    frames = _doc_vectors()
    assert len(frames) == len(expected)
    for message, frame in zip(expected, frames, strict=True):
        assert encode_message(message) == frame, message
        assert decode_payload(Opcode(frame[3]), frame[HEADER_SIZE:]) == message


def _check_capability_vectors(section: str, capability: str, messages: list[Message]) -> None:
    """The vectors of a capability's section: HELLO offering it, the WELCOME of a server that speaks it, then ``messages``."""
    hello = Hello(P, 6881, capabilities={capability: 1})
    welcome = ServerHandshake(supported=KNOWN).receive(hello, TEMPLATE)
    expected = [hello, welcome, *messages]
    frames = _doc_vectors(f"### {section} ")
    assert len(frames) == len(expected)
    for message, frame in zip(expected, frames, strict=True):
        assert encode_message(message) == frame, message
        assert decode_payload(Opcode(frame[3]), frame[HEADER_SIZE:]) == message
    agreement = ClientHandshake(hello).receive(welcome)
    assert isinstance(agreement, Agreement) and agreement.version(capability) == 1


def test_the_bittorrent_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.12: a client offering bittorrent, a server that speaks it, LIST_TORRENTS and TORRENT_LIST."""
    _check_capability_vectors("8.12", BITTORRENT, [ListTorrents(100), TorrentList([TorrentEntry(P, 1, 2, 3)]), TorrentList([], 7)])


def test_the_withdraw_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.5: a client offering withdraw, a server that speaks it, and the WITHDRAW message."""
    _check_capability_vectors("8.5", WITHDRAW, [Withdraw(F, ((0, 2), (5, 6))), Withdraw(F, ())])


def test_the_gateway_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.10: a client offering gateway, a server that speaks it, REGISTER with and without the gateway's port."""
    _check_capability_vectors("8.10", GATEWAY, [Register(6881, 8080), Register(6881)])


def test_the_lookup_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.9: a client offering lookup, a server that speaks it, LOOKUP, and FILE_LIST with and without ``more``."""
    entry = FileEntry(F, "victim.bin", 1024, 1024, 1, 1, 1)
    _check_capability_vectors("8.9", LOOKUP, [Lookup("victim.bin", 100), Lookup("4646", 2), FileList([entry]), FileList([entry], more=5)])


def test_the_collections_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.11: HELLO/WELCOME with collections, GET/WATCH, an empty COLLECTION, a signed version, COLLECTION_CONFLICT, VERSION_PRUNED."""
    client_key, _ = _vector_keys()
    version = sign_version(client_key, "photos", 1, bytes(32), [Entry("a/b.txt", 3, F, 0o644, 0)], [client_key.public_key])
    assert version.root.hex().startswith("d895dec7") and client_key.public_key.hex().startswith("a7f6")
    messages: list[Message] = [
        GetCollection("photos"), WatchCollection("photos", F, 25), CollectionReply(None), PublishCollection(version),
        Error(ErrorCode.COLLECTION_CONFLICT, "collection 'photos' is at version 2", 2), GetCollection("photos", 3),
        Error(ErrorCode.VERSION_PRUNED, "collection 'photos' keeps versions from 8 on: version 3 was pruned", 8),
    ]
    _check_capability_vectors("8.11", COLLECTIONS, messages)
    check_successor(None, version)


def _vector_keys() -> tuple[NodeKey, NodeKey]:
    """PROTOCOL.md §8.6: the client's key (seed "c" * 32) and the server's (seed "s" * 32)."""
    return (NodeKey(Ed25519PrivateKey.from_private_bytes(b"c" * 32)), NodeKey(Ed25519PrivateKey.from_private_bytes(b"s" * 32)))


def test_the_identity_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.6: HELLO with a challenge, WELCOME with the server's proof, IDENTIFY, OK; each side checks the other."""
    client_key, server_key = _vector_keys()
    client = ClientHandshake(Hello(P, 6881), key=client_key, make_challenge=lambda: b"C" * 32)
    server = ServerHandshake(supported=KNOWN, key=server_key, make_challenge=lambda: b"S" * 32)
    welcome = server.receive(client.hello, TEMPLATE)
    assert server.state is HandshakeState.IDENTIFYING and server.agreement is None
    agreement = client.receive(welcome)
    assert isinstance(agreement, Agreement) and agreement.remote_node == server_key.node_id
    assert client.identify is not None and client.state is HandshakeState.IDENTIFYING
    ok = server.identify(client.identify)
    assert server.agreement is not None and server.agreement.remote_node == client_key.node_id
    assert client.receive(ok) is agreement and client.state is HandshakeState.DONE
    expected = [client.hello, welcome, client.identify, ok]
    frames = _doc_vectors("### 8.6 ")
    assert len(frames) == len(expected)
    for message, frame in zip(expected, frames, strict=True):
        assert encode_message(message) == frame, message
        assert decode_payload(Opcode(frame[3]), frame[HEADER_SIZE:]) == message
    assert client.hello.peer_id == peer_id_of(client_key.public_key) and welcome.peer_id == server_key.peer_id


def test_the_unpublish_vector_is_the_encoding() -> None:
    (frame,) = _doc_vectors("### 8.7 ")
    assert encode_message(Unpublish(F)) == frame and decode_payload(Opcode.UNPUBLISH, frame[HEADER_SIZE:]) == Unpublish(F)


def _identified_pair() -> tuple[ClientHandshake, ServerHandshake, Welcome]:
    client = ClientHandshake(Hello(P, 6881), key=NodeKey.generate())
    server = ServerHandshake(supported=KNOWN, key=NodeKey.generate())
    return client, server, server.receive(client.hello, TEMPLATE)


def test_a_forged_server_proof_is_refused() -> None:
    client, _, welcome = _identified_pair()
    impostor = NodeKey.generate()  # signs with its own key but claims the real server's
    forged = attrs.evolve(welcome, proof=impostor.prove(b"server", client.hello.challenge))
    with pytest.raises(RemoteProtocolError, match="WELCOME's proof"):
        client.receive(forged)
    client, _, welcome = _identified_pair()
    with pytest.raises(RemoteProtocolError, match="server id"):
        client.receive(attrs.evolve(welcome, peer_id=T))


def test_a_client_proof_must_be_fresh_and_match_its_peer_id() -> None:
    client, server, welcome = _identified_pair()
    client.receive(welcome)
    assert client.identify is not None
    other_client, _, other_welcome = _identified_pair()
    other_client.receive(other_welcome)
    assert other_client.identify is not None
    # A proof made for another connection's challenge (a replay) fails.
    replay = Identify(other_client.identify.public_key, other_client.identify.proof)
    with pytest.raises(RemoteProtocolError, match="IDENTIFY's proof"):
        server.identify(replay)
    # A valid proof of a key whose peer id is not the HELLO's: the claim of another's id.
    thief = NodeKey.generate()
    client = ClientHandshake(Hello(P, 6881), key=NodeKey.generate())
    server = ServerHandshake(supported=KNOWN, key=NodeKey.generate())
    welcome = server.receive(client.hello, TEMPLATE)
    with pytest.raises(RemoteProtocolError) as info:
        server.identify(Identify(thief.public_key, thief.prove(b"client", welcome.challenge)))
    assert info.value.error_code == ErrorCode.IDENTITY_CONFLICT
    # Anything before IDENTIFY is a violation.
    client, server, _ = _identified_pair()
    with pytest.raises(RemoteProtocolError, match="REGISTER before IDENTIFY"):
        server.identify(Register(6881))


def test_identity_needs_a_key_on_both_sides_and_falls_back_cleanly() -> None:
    client = ClientHandshake(Hello(P, 6881), key=NodeKey.generate())
    # A server without a key does not agree on identity: a plain agreement, no IDENTIFY.
    welcome = ServerHandshake(supported=KNOWN).receive(client.hello, TEMPLATE)
    assert ("identity", 1) not in welcome.capabilities and not welcome.proof
    agreement = client.receive(welcome)
    assert isinstance(agreement, Agreement) and agreement.remote_node is None and client.identify is None
    # A server that requires identity refuses a HELLO without it, with its own code.
    with pytest.raises(RemoteProtocolError) as info:
        ServerHandshake(supported=KNOWN, key=NodeKey.generate(), required=frozenset({"identity"})).receive(OLD_HELLO, TEMPLATE)
    assert info.value.error_code == ErrorCode.IDENTITY_REQUIRED
    # The plain retry for an older server drops the challenge with the capabilities.
    assert encode_message(client.plain().hello) == encode_message(Hello(client.hello.peer_id, 6881))


def test_the_swarm_vectors_are_the_encoding() -> None:
    """PROTOCOL.md §8.8: HELLO/WELCOME with swarm, SWARM_CHALLENGE, SWARM_PROOF, ERROR NOT_A_MEMBER, and the macs."""
    hello = Hello(P, 6881, capabilities={SWARM: 1})
    welcome = ServerHandshake(supported=KNOWN, required=frozenset({SWARM})).receive(hello, TEMPLATE)
    expected = [hello, welcome, SwarmChallenge(b"N" * 32, b"K" * 32), SwarmProof(b"S" * 64, b"M" * 32), Error(ErrorCode.NOT_A_MEMBER, "x")]
    frames = _doc_vectors("Test vectors (`P`, `T` as in §8.4; the challenge")
    assert len(frames) == len(expected)
    for message, frame in zip(expected, frames, strict=True):
        assert encode_message(message) == frame, message
        assert decode_payload(Opcode(frame[3]), frame[HEADER_SIZE:]) == message
    text = PROTOCOL_MD.read_text()
    macs = dict(re.findall(r"^(mac_[cs])  ([0-9a-f ]+)$", text[text.index("### 8.8 ") :], re.MULTILINE))
    data = transcript("office", SwarmChallenge(b"c" * 32, b"C" * 32), SwarmChallenge(b"s" * 32, b"S" * 32))
    assert swarm_mac(b"k" * 32, b"client", data) == bytes.fromhex(macs["mac_c"])
    assert swarm_mac(b"k" * 32, b"server", data) == bytes.fromhex(macs["mac_s"])


def _fields_on_the_wire(frame: bytes) -> int:
    fields = msgpack.unpackb(frame[HEADER_SIZE:])
    assert isinstance(fields, list)
    return len(fields)


def test_an_older_client_gets_the_welcome_it_reads() -> None:
    """A four-field HELLO offers nothing, and the WELCOME has the six fields protocol 1 specified."""
    server = ServerHandshake(supported={"x-demo": 1})
    codec = Codec()
    codec.receive_data(_doc_vectors()[0])
    welcome = server.receive(codec.next_event(), TEMPLATE)  # type: ignore[arg-type]
    frame = encode_message(welcome)
    assert frame == _doc_vectors()[1]
    assert _fields_on_the_wire(frame) == 6  # exactly what an older client accepts
    assert server.state is HandshakeState.DONE
    assert server.agreement is not None and server.agreement.capabilities == {}


def test_a_newer_client_falls_back_to_the_plain_hello_with_an_older_server() -> None:
    client = ClientHandshake(NEW_HELLO)
    assert encode_message(client.hello) == _doc_vectors()[2]
    # An older server refuses the fifth field; that is what it says before closing.
    refusal = decode_payload(Opcode.ERROR, _doc_vectors()[4][HEADER_SIZE:])
    assert client.receive(refusal) is RETRY_PLAIN  # type: ignore[arg-type]
    again = client.plain()
    assert encode_message(again.hello) == _doc_vectors()[0]  # the four fields an older server reads
    agreement = again.receive(OLD_WELCOME)
    assert isinstance(agreement, Agreement) and agreement.capabilities == {}


def test_newer_sides_agree_on_the_lower_version() -> None:
    server = ServerHandshake(supported={"x-demo": 1, "other": 4})
    welcome = server.receive(NEW_HELLO, TEMPLATE)
    assert welcome == NEW_WELCOME
    assert encode_message(welcome) == _doc_vectors()[3]
    agreement = ClientHandshake(NEW_HELLO).receive(welcome)
    assert isinstance(agreement, Agreement)
    assert agreement.version("x-demo") == 1 and agreement.speaks("x-demo")
    assert not agreement.speaks("other")  # not offered: never used
    assert server.agreement == agreement


def test_unknown_capabilities_are_left_out_not_refused() -> None:
    hello = Hello(P, capabilities={"a": 3, "zz-from-the-future": 9})
    welcome = ServerHandshake(supported={"a": 1}).receive(hello, TEMPLATE)
    assert welcome.capabilities == (("a", 1),)


def test_trailing_values_of_a_newer_sender_are_ignored() -> None:
    # A HELLO from a later revision: a capability entry and the message itself carry more.
    # (The sixth field is identity's challenge, §8.6: empty, its default; the seventh is unknown.)
    payload = msgpack.packb([P, 6881, 1, "", [["x-demo", 2, "later"]], b"", "a field from later"])
    assert decode_payload(Opcode.HELLO, payload) == NEW_HELLO


def test_a_server_that_requires_a_capability_refuses_a_hello_without_it() -> None:
    server = ServerHandshake(supported={"x-demo": 1}, required=frozenset({"x-demo"}))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive(OLD_HELLO, TEMPLATE)
    assert info.value.error_code == ErrorCode.MISSING_CAPABILITY and "x-demo" in info.value.reason
    assert server.state is HandshakeState.FAILED and server.agreement is None


def test_a_client_that_requires_a_capability_does_not_fall_back() -> None:
    client = ClientHandshake(NEW_HELLO, required=frozenset({"x-demo"}))
    with pytest.raises(Refused) as info:
        client.receive(OLD_SERVER_REFUSAL)
    assert info.value.code == ErrorCode.BAD_REQUEST
    client = ClientHandshake(NEW_HELLO, required=frozenset({"x-demo"}))
    with pytest.raises(Refused) as info:
        client.receive(OLD_WELCOME)  # a newer server that does not speak it
    assert info.value.code == ErrorCode.MISSING_CAPABILITY


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (Register(6881), ErrorCode.BAD_REQUEST),
        (Ok(), ErrorCode.BAD_REQUEST),
        (Hello(P, protocol_version=2), ErrorCode.UNSUPPORTED_VERSION),
    ],
    ids=["register first", "ok first", "version 2"],
)
def test_the_server_refuses_anything_but_a_hello_of_its_version(first: Hello | Register | Ok, code: int) -> None:
    server = ServerHandshake()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive(first, TEMPLATE)
    assert info.value.error_code == code
    with pytest.raises(LocalProtocolError):  # refusal is final: a shell that tried again has a bug
        server.receive(OLD_HELLO, TEMPLATE)


@pytest.mark.parametrize(
    "answer",
    [
        Welcome(T, capabilities={"never-offered": 1}),
        Welcome(T, capabilities={"x-demo": 3}),  # above the version offered
        Welcome(T, protocol_version=2),
        Ok(),
        Hello(P),
    ],
    ids=["unoffered", "higher version", "version 2", "ok", "hello"],
)
def test_the_client_refuses_an_answer_that_breaks_the_rules(answer: Welcome | Ok | Hello) -> None:
    client = ClientHandshake(NEW_HELLO)
    with pytest.raises(RemoteProtocolError):
        client.receive(answer)
    assert client.state is HandshakeState.FAILED


@pytest.mark.parametrize("code", [ErrorCode.BUSY, ErrorCode.TOO_MANY_CONNECTIONS, ErrorCode.UNSUPPORTED_VERSION, 999])
def test_an_error_answer_is_a_refusal_with_its_code(code: int) -> None:
    with pytest.raises(Refused) as info:
        ClientHandshake(NEW_HELLO).receive(Error(code, "no"))
    assert info.value.code == code
    # At a limit: it may take us later, and a downloader tries it again.
    assert isinstance(info.value, Busy) == (code in (ErrorCode.BUSY, ErrorCode.TOO_MANY_CONNECTIONS))
    with pytest.raises(Refused):  # a client offering nothing has nothing to fall back from
        ClientHandshake(OLD_HELLO).receive(Error(ErrorCode.BAD_REQUEST, "no"))


def test_a_handshake_answers_once() -> None:
    client = ClientHandshake(OLD_HELLO)
    client.receive(OLD_WELCOME)
    with pytest.raises(LocalProtocolError):
        client.receive(OLD_WELCOME)
    with pytest.raises(LocalProtocolError):
        ServerHandshake(supported={}, required=frozenset({"x"}))  # cannot require what it does not speak
    with pytest.raises(LocalProtocolError):
        ClientHandshake(OLD_HELLO, required=frozenset({"x"}))  # cannot require what it does not offer


@pytest.mark.parametrize(
    "bad",
    [
        {"Upper": 1},
        {"": 1},
        {"9starts-with-digit": 1},
        {"x" * 33: 1},
        {"space name": 1},
        {"x": -1},
        {"x": 70_000},
        [("x", 1), ("x", 2)],
        [("x",)],
        {f"c{i}": 1 for i in range(MAX_CAPABILITIES + 1)},
        "x",
    ],
    ids=["upper", "empty", "digit first", "too long", "space", "negative", "too high", "twice", "no version", "too many", "not pairs"],
)
def test_capability_sets_are_validated(bad: object) -> None:
    with pytest.raises(ValidationError):
        Hello(P, capabilities=bad)  # type: ignore[arg-type]
    fields = [P, 0, 1, "", list(bad.items()) if isinstance(bad, dict) else bad]
    with pytest.raises(RemoteProtocolError) as info:
        decode_payload(Opcode.HELLO, msgpack.packb(fields))
    assert info.value.error_code == ErrorCode.BAD_REQUEST


names = st.from_regex(r"[a-z][a-z0-9._-]{0,31}", fullmatch=True)
capability_maps = st.dictionaries(names, st.integers(0, 0xFFFF), max_size=8)


@given(offered=capability_maps, supported=capability_maps)
def test_the_agreement_is_what_both_speak_at_the_lower_version(offered: dict[str, int], supported: dict[str, int]) -> None:
    hello = Hello(P, capabilities=offered)
    agreed = dict(agree(hello.capabilities, supported))
    assert agreed == {name: min(version, supported[name]) for name, version in offered.items() if name in supported}
    check_agreement(hello.capabilities, tuple(sorted(agreed.items())))  # a client accepts it
    # ... and the round trip over the wire keeps it.
    welcome = ServerHandshake(supported=supported).receive(hello, TEMPLATE)
    assert decode_payload(Opcode.WELCOME, encode_message(welcome)[HEADER_SIZE:]) == welcome


# -- the connecting shell (peer/greeting.py) --------------------------------------
async def _protocol_1_server(stream: trio.abc.Stream) -> None:
    """A server as protocol 1 first specified it: exact field counts, so a HELLO with capabilities is refused."""
    data = b""
    while len(data) < HEADER_SIZE or len(data) < HEADER_SIZE + int.from_bytes(data[4:8], "big"):
        data += await stream.receive_some(65536)
    fields = msgpack.unpackb(data[HEADER_SIZE:])
    await stream.send_all(encode_message(OLD_WELCOME if len(fields) == 4 else OLD_SERVER_REFUSAL))
    await stream.aclose()


def _protocol_1_servers(nursery: trio.Nursery, hellos: list[bytes]) -> Connect:
    """A ``Connect`` whose every connection reaches a new :func:`_protocol_1_server`; what they receive goes in ``hellos``."""

    async def connect(address: tuple[str, int]) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(_protocol_1_server, _Recording(server, hellos))
        return client

    return connect


async def test_a_connecting_peer_greets_a_protocol_1_server_again_without_capabilities(nursery: trio.Nursery) -> None:
    hellos: list[bytes] = []
    conn, agreement = await open_greeted(_protocol_1_servers(nursery, hellos), ("192.0.2.1", 6881), NEW_HELLO)
    await conn.aclose()
    assert hellos == [_doc_vectors()[2], _doc_vectors()[0]]  # offered x-demo, then the protocol-1 HELLO
    assert agreement.welcome == OLD_WELCOME and agreement.capabilities == {}


async def test_a_connecting_peer_that_offers_nothing_greets_once(nursery: trio.Nursery) -> None:
    hellos: list[bytes] = []
    conn, _ = await open_greeted(_protocol_1_servers(nursery, hellos), ("192.0.2.1", 6881), OLD_HELLO)
    await conn.aclose()
    assert hellos == [_doc_vectors()[0]]


class _Recording(trio.abc.Stream):
    """Passes a stream through, keeping what the other side sent."""

    def __init__(self, inner: trio.abc.Stream, received: list[bytes]) -> None:
        self.inner = inner
        self.received = received

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.received.append(bytes(data))
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()
