"""The handshake of every connection, once: HELLO first, the version checked, WELCOME or ERROR.

Sans-I/O state machines in h11's manner: they take the messages a shell has
decoded and return what to send or what was agreed; they never touch a socket.
The tracker, the chunk server, the download session and the tracker client
all use them, so the rules of ``common/PROTOCOL.md`` §7 and §8 live here only.

Server side::

    handshake = ServerHandshake(supported={"name": 2}, required=frozenset())
    welcome = handshake.receive(first_message, Welcome(server_id, ...))  # raises RemoteProtocolError
    send(welcome)                        # with the agreed capabilities filled in
    handshake.agreement                  # what this connection may use

Client side::

    handshake = ClientHandshake(Hello(peer_id, port, capabilities={"name": 2}))
    send(handshake.hello)
    outcome = handshake.receive(reply)   # an Agreement, or RETRY_PLAIN; raises Refused or RemoteProtocolError
    if outcome is RETRY_PLAIN:           # a protocol-1.0 server refused the capabilities field:
        handshake = handshake.plain()    # reconnect and say HELLO without it

With the capability ``identity`` (PROTOCOL.md §8.6) each side proves its node
key: the server in WELCOME (over the HELLO's challenge), the client in the
IDENTIFY that follows (over the WELCOME's challenge), which the server
answers OK. A server then needs one more message (``state`` is IDENTIFYING
until it comes)::

    ok = handshake.identify(second_message)   # raises RemoteProtocolError; send(ok)
    handshake.agreement.remote_node           # the client's proven node id

and a client has one more to send and one more answer to read::

    agreement = handshake.receive(welcome)    # the server's proof checked: agreement.remote_node
    send(handshake.identify)                  # not None when identity was agreed
    handshake.receive(ok)                     # Refused on ERROR

Why RETRY_PLAIN: servers written to protocol 1 as first specified refuse any
field they do not know, so a HELLO that offers capabilities gets ERROR
BAD_REQUEST from them. A client that requires no capability then says HELLO
again, on a new connection, without offering any, and uses no optional feature.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping

import attrs

from common.capabilities import IDENTITY, agree, check_agreement
from common.errors import Busy, LocalProtocolError, Refused, RemoteProtocolError, ValidationError
from common.framing import PROTOCOL_VERSION, ErrorCode
from common.identity import NONCE_SIZE, NodeKey, node_id, peer_id_of, proof_message, verify_signature
from common.messages import Error, Hello, Identify, Message, Ok, Welcome

__all__ = ["HandshakeState", "Agreement", "ServerHandshake", "ClientHandshake", "RETRY_PLAIN"]


class HandshakeState(enum.Enum):
    AWAITING = "awaiting"  # server: for HELLO; client: for the answer to its HELLO
    IDENTIFYING = "identifying"  # identity agreed; server: for IDENTIFY; client: for the answer to its IDENTIFY
    DONE = "done"
    FAILED = "failed"


class _Retry(enum.Enum):
    RETRY_PLAIN = "RETRY_PLAIN"


#: :meth:`ClientHandshake.receive`: the server may speak protocol 1 as first specified; say HELLO again without capabilities.
RETRY_PLAIN = _Retry.RETRY_PLAIN


@attrs.frozen
class Agreement:
    """What a finished handshake settled: both messages and the capabilities in use on the connection."""

    hello: Hello
    welcome: Welcome
    #: The other side's node id, proven in the handshake (capability identity); None when not agreed.
    remote_node: bytes | None = None

    @property
    def capabilities(self) -> dict[str, int]:
        return dict(self.welcome.capabilities)

    def version(self, name: str) -> int | None:
        """The agreed version of capability ``name``, or None: then the feature is not used on this connection."""
        for agreed, version in self.welcome.capabilities:
            if agreed == name:
                return version
        return None

    def speaks(self, name: str) -> bool:
        return self.version(name) is not None


def _fresh_challenge() -> bytes:
    return os.urandom(NONCE_SIZE)


def _check_proof(public_key: bytes, proof: bytes, role: bytes, challenge: bytes, what: str) -> None:
    try:
        verify_signature(public_key, proof, proof_message(role, challenge, public_key))
    except ValidationError as exc:
        raise RemoteProtocolError(f"{what}: {exc}", error_code=ErrorCode.BAD_REQUEST) from None


def _check_version(version: int, what: str) -> None:
    if version != PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"{what} speaks protocol version {version}, this side speaks {PROTOCOL_VERSION}", error_code=ErrorCode.UNSUPPORTED_VERSION
        )


@attrs.define(eq=False)
class ServerHandshake:
    """The serving side: waits for HELLO and answers WELCOME with the agreed capabilities."""

    #: Every optional feature this server speaks, with its highest version.
    supported: Mapping[str, int] = attrs.field(factory=dict)
    #: Capabilities a client must agree on to be served (a private swarm's authentication, say).
    required: frozenset[str] = frozenset()
    #: This node's key; without one, ``identity`` is never agreed (there is nothing to prove).
    key: NodeKey | None = None
    #: Fresh challenges (os.urandom; tests pin them to reproduce PROTOCOL.md's vectors).
    make_challenge: Callable[[], bytes] = _fresh_challenge
    state: HandshakeState = attrs.field(init=False, default=HandshakeState.AWAITING)
    #: Set once the handshake is DONE (after IDENTIFY, when identity was agreed).
    agreement: Agreement | None = attrs.field(init=False, default=None)
    _pending: Agreement | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.key is None and IDENTITY in self.supported:
            self.supported = {name: v for name, v in self.supported.items() if name != IDENTITY}
        missing = self.required - set(self.supported)
        if missing:
            raise LocalProtocolError(f"required capabilities {sorted(missing)} are not among those supported")

    def receive(self, message: Message, welcome: Welcome) -> Welcome:
        """The WELCOME to send for the client's first ``message`` (``welcome`` with the agreement filled in).

        Raises :class:`RemoteProtocolError`, whose ``error_code`` the ERROR
        frame before the close carries: BAD_REQUEST for anything but HELLO,
        UNSUPPORTED_VERSION, MISSING_CAPABILITY.
        """
        if self.state is not HandshakeState.AWAITING:
            raise LocalProtocolError(f"the handshake is {self.state.value}; it takes one HELLO")
        self.state = HandshakeState.FAILED  # until everything below has passed
        if not isinstance(message, Hello):
            raise RemoteProtocolError(f"{message.OPCODE.name} before HELLO", error_code=ErrorCode.BAD_REQUEST)
        _check_version(message.protocol_version, "HELLO")
        agreed = agree(message.capabilities, self.supported)
        missing = self.required - {name for name, _ in agreed}
        if IDENTITY in missing:
            raise RemoteProtocolError(
                "this server admits identified nodes only (capability identity): the HELLO did not offer it",
                error_code=ErrorCode.IDENTITY_REQUIRED,
            )
        if missing:
            raise RemoteProtocolError(
                f"this server requires the capabilities {', '.join(sorted(missing))}, which the HELLO did not offer",
                error_code=ErrorCode.MISSING_CAPABILITY,
            )
        answer = attrs.evolve(welcome, capabilities=agreed)
        if self.key is not None and IDENTITY in dict(agreed):
            if not message.challenge:
                raise RemoteProtocolError("HELLO offers identity without a challenge", error_code=ErrorCode.BAD_REQUEST)
            challenge = self.make_challenge()
            proof = self.key.prove(b"server", message.challenge)
            answer = attrs.evolve(answer, peer_id=self.key.peer_id, challenge=challenge, public_key=self.key.public_key, proof=proof)
            self._pending = Agreement(message, answer)
            self.state = HandshakeState.IDENTIFYING
            return answer
        self.agreement = Agreement(message, answer)
        self.state = HandshakeState.DONE
        return answer

    def identify(self, message: Message) -> Ok:
        """The OK to send for the client's IDENTIFY (``message``), once its proof and peer id check out.

        Raises :class:`RemoteProtocolError` (BAD_REQUEST: anything but IDENTIFY,
        a proof that fails; IDENTITY_CONFLICT: a HELLO peer id that is not the
        proven key's), after which the connection is closed.
        """
        if self.state is not HandshakeState.IDENTIFYING or self._pending is None:
            raise LocalProtocolError(f"the handshake is {self.state.value}; IDENTIFY comes after an identity WELCOME")
        self.state = HandshakeState.FAILED
        if not isinstance(message, Identify):
            raise RemoteProtocolError(f"{message.OPCODE.name} before IDENTIFY (capability identity)", error_code=ErrorCode.BAD_REQUEST)
        pending = self._pending
        _check_proof(message.public_key, message.proof, b"client", pending.welcome.challenge, "IDENTIFY's proof fails")
        if peer_id_of(message.public_key) != pending.hello.peer_id:
            raise RemoteProtocolError("the HELLO's peer id is not the identified key's", error_code=ErrorCode.IDENTITY_CONFLICT)
        self.agreement = attrs.evolve(pending, remote_node=node_id(message.public_key))
        self.state = HandshakeState.DONE
        return Ok()


@attrs.define(eq=False)
class ClientHandshake:
    """The connecting side: says :attr:`hello`, then checks the answer."""

    #: The HELLO to send first; its ``capabilities`` are what this client offers.
    hello: Hello
    #: Capabilities the server must agree on, or this client will not go on.
    required: frozenset[str] = frozenset()
    #: This node's key: the HELLO then offers ``identity`` with a fresh challenge, and its peer id is the key's.
    key: NodeKey | None = None
    make_challenge: Callable[[], bytes] = _fresh_challenge
    state: HandshakeState = attrs.field(init=False, default=HandshakeState.AWAITING)
    agreement: Agreement | None = attrs.field(init=False, default=None)
    #: The IDENTIFY to send once the server's proof has passed; None unless identity was agreed.
    identify: Identify | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.key is not None:
            offered = {**dict(self.hello.capabilities), IDENTITY: 1}
            self.hello = attrs.evolve(self.hello, peer_id=self.key.peer_id, capabilities=offered, challenge=self.make_challenge())
        elif IDENTITY in dict(self.hello.capabilities):
            raise LocalProtocolError("a HELLO that offers identity needs the node's key")
        missing = self.required - {name for name, _ in self.hello.capabilities}
        if missing:
            raise LocalProtocolError(f"required capabilities {sorted(missing)} are not offered in the HELLO")

    def receive(self, message: Message) -> Agreement | _Retry:
        """The agreement once ``message`` (the answer to HELLO) is a valid WELCOME.

        Returns :data:`RETRY_PLAIN` for the ERROR BAD_REQUEST a protocol-1.0
        server gives a HELLO that offers capabilities, when none is required.
        Raises :class:`Refused` for any other ERROR (``code`` says why; :class:`Busy`
        when the server is at a limit and may take us later) or a
        WELCOME without a required capability, :class:`RemoteProtocolError`
        for anything else.
        """
        if self.state is HandshakeState.IDENTIFYING:
            return self._identified(message)
        if self.state is not HandshakeState.AWAITING:
            raise LocalProtocolError(f"the handshake is {self.state.value}; it takes one answer")
        self.state = HandshakeState.FAILED  # until everything below has passed
        if isinstance(message, Error):
            if message.code == ErrorCode.BAD_REQUEST and self.hello.capabilities and not self.required:
                return RETRY_PLAIN
            refusal = Busy if message.code in (ErrorCode.BUSY, ErrorCode.TOO_MANY_CONNECTIONS) else Refused
            raise refusal(f"refused with {message.code_name}: {message.message}", code=message.code)
        if not isinstance(message, Welcome):
            raise RemoteProtocolError(f"answered HELLO with {type(message).__name__}", error_code=ErrorCode.BAD_REQUEST)
        _check_version(message.protocol_version, "WELCOME")
        try:
            check_agreement(self.hello.capabilities, message.capabilities)
        except ValidationError as exc:
            raise RemoteProtocolError(str(exc), error_code=ErrorCode.BAD_REQUEST) from None
        missing = self.required - {name for name, _ in message.capabilities}
        if missing:
            raise Refused(
                f"the other side does not agree on the required capabilities {', '.join(sorted(missing))}",
                code=ErrorCode.MISSING_CAPABILITY,
            )
        if self.key is not None and any(name == IDENTITY for name, _ in message.capabilities):
            return self._server_proven(message, self.key)
        self.agreement = Agreement(self.hello, message)
        self.state = HandshakeState.DONE
        return self.agreement

    def _server_proven(self, welcome: Welcome, key: NodeKey) -> Agreement:
        if not (welcome.challenge and welcome.public_key and welcome.proof):
            raise RemoteProtocolError("a WELCOME that agrees on identity lacks its challenge, key or proof", error_code=ErrorCode.BAD_REQUEST)
        _check_proof(welcome.public_key, welcome.proof, b"server", self.hello.challenge, "WELCOME's proof fails")
        if peer_id_of(welcome.public_key) != welcome.peer_id:
            raise RemoteProtocolError("the WELCOME's server id is not the identified key's", error_code=ErrorCode.BAD_REQUEST)
        self.identify = Identify(key.public_key, key.prove(b"client", welcome.challenge))
        self.agreement = Agreement(self.hello, welcome, remote_node=node_id(welcome.public_key))
        self.state = HandshakeState.IDENTIFYING
        return self.agreement

    def _identified(self, message: Message) -> Agreement:
        """The answer to IDENTIFY: OK, or the ERROR of a server that did not accept it."""
        self.state = HandshakeState.FAILED
        if isinstance(message, Error):
            raise Refused(f"identification refused with {message.code_name}: {message.message}", code=message.code)
        if not isinstance(message, Ok):
            raise RemoteProtocolError(f"answered IDENTIFY with {type(message).__name__}", error_code=ErrorCode.BAD_REQUEST)
        assert self.agreement is not None  # set with the IDENTIFY
        self.state = HandshakeState.DONE
        return self.agreement

    def plain(self) -> ClientHandshake:
        """A fresh handshake for a new connection that offers no capability (after :data:`RETRY_PLAIN`)."""
        return ClientHandshake(attrs.evolve(self.hello, capabilities=(), challenge=b""))
