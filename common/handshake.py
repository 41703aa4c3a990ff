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

Why RETRY_PLAIN: servers written to protocol 1 as first specified refuse any
field they do not know, so a HELLO that offers capabilities gets ERROR
BAD_REQUEST from them. A client that requires no capability then says HELLO
again, on a new connection, without offering any, and uses no optional feature.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from common.capabilities import agree, check_agreement
from common.errors import Busy, LocalProtocolError, Refused, RemoteProtocolError, ValidationError
from common.framing import PROTOCOL_VERSION, ErrorCode
from common.messages import Error, Hello, Message, Welcome

__all__ = ["HandshakeState", "Agreement", "ServerHandshake", "ClientHandshake", "RETRY_PLAIN"]


class HandshakeState(enum.Enum):
    AWAITING = "awaiting"  # server: for HELLO; client: for the answer to its HELLO
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
    state: HandshakeState = attrs.field(init=False, default=HandshakeState.AWAITING)
    agreement: Agreement | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
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
        if missing:
            raise RemoteProtocolError(
                f"this server requires the capabilities {', '.join(sorted(missing))}, which the HELLO did not offer",
                error_code=ErrorCode.MISSING_CAPABILITY,
            )
        answer = attrs.evolve(welcome, capabilities=agreed)
        self.agreement = Agreement(message, answer)
        self.state = HandshakeState.DONE
        return answer


@attrs.define(eq=False)
class ClientHandshake:
    """The connecting side: says :attr:`hello`, then checks the answer."""

    #: The HELLO to send first; its ``capabilities`` are what this client offers.
    hello: Hello
    #: Capabilities the server must agree on, or this client will not go on.
    required: frozenset[str] = frozenset()
    state: HandshakeState = attrs.field(init=False, default=HandshakeState.AWAITING)
    agreement: Agreement | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
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
        self.agreement = Agreement(self.hello, message)
        self.state = HandshakeState.DONE
        return self.agreement

    def plain(self) -> ClientHandshake:
        """A fresh handshake for a new connection that offers no capability (after :data:`RETRY_PLAIN`)."""
        return ClientHandshake(attrs.evolve(self.hello, capabilities=()))
