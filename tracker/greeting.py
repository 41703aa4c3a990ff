"""The tracker's side of the handshake: HELLO -> WELCOME (and IDENTIFY -> OK), then the table of what the client agreed on.

The rules are ``common/handshake.py``'s; this module applies them to a
tracker connection, in its own task: it decides who is asking (its proven
node, PROTOCOL.md §8.6), what the connection may use (:func:`tracker.handlers.after_hello`)
and, in a private swarm, hands it to the proof of membership (``tracker.private``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from common.address import format_address
from common.capabilities import COLLECTIONS, IDENTITY, LOOKUP, UNPUBLISH, WITHDRAW
from common.codec import encode_message
from common.handshake import Agreement, HandshakeState, ServerHandshake
from common.identity import short_id
from common.messages import MESSAGE_TYPES, Message, Welcome
from common.swarm import SWARM
from common.version import __version__
from tracker.handlers import Handlers, after_hello

if TYPE_CHECKING:
    from tracker.connection import Connection

__all__ = ["GREETING", "IDENTIFYING", "AGENT", "SUPPORTED", "handshake", "identify"]

log = logging.getLogger(__name__)

AGENT: Final = f"chunkswarm-tracker/{__version__}"
#: The optional features (PROTOCOL.md §8) this tracker speaks, with their highest versions.
SUPPORTED: Final[Mapping[str, int]] = {WITHDRAW: 1, IDENTITY: 1, UNPUBLISH: 1, LOOKUP: 1, COLLECTIONS: 1}

async def handshake(connection: Connection, first: Message) -> bytes:
    """The first message -> WELCOME: the rules of ``common/handshake.py``, then the tracker's requests open to the client.

    Every message type leads here before HELLO (:data:`GREETING`), so that
    module alone decides what a first message may be. In the connection's own
    task: it decides who is asking and what the connection may use.
    """
    service = connection.service
    config = service.config
    private = service.private  # PROTOCOL.md §8.8: swarm required, and proven before anything else
    required = frozenset({IDENTITY}) if config.require_identity else frozenset()
    supported = {**SUPPORTED, SWARM: 1} if private else SUPPORTED
    greeting = ServerHandshake(supported=supported, required=required | ({SWARM} if private else set()), key=config.node_key)
    welcome = greeting.receive(first, Welcome(service.tracker_id, config.heartbeat_interval, connection.host, connection.port,
                                              agent=AGENT))  # fmt: skip
    if greeting.state is HandshakeState.IDENTIFYING:
        connection.greeting = greeting
        connection.handlers = IDENTIFYING
    else:
        assert greeting.agreement is not None  # receive() returned a WELCOME
        _agreed(connection, greeting.agreement)
    return encode_message(welcome)


async def identify(connection: Connection, request: Message) -> bytes:
    """The message after an identity WELCOME: IDENTIFY, whose proof the handshake checks (PROTOCOL.md §8.6), then OK."""
    greeting = connection.greeting
    assert greeting is not None  # IDENTIFYING is the table only while the handshake waits
    ok = greeting.identify(request)  # raises RemoteProtocolError: ERROR and close
    connection.greeting = None
    assert greeting.agreement is not None
    _agreed(connection, greeting.agreement)
    log.debug("node %s identified from %s", short_id(connection.node or b"\0" * 32), format_address(connection.host, connection.port))
    return encode_message(ok)


def _agreed(connection: Connection, agreement: Agreement) -> None:
    connection.agreement = agreement
    connection.peer_id = agreement.hello.peer_id
    connection.node = agreement.remote_node
    connection.claimed_port = agreement.hello.listen_port
    # The agreement picks the table once: what it adds costs nothing per request.
    connection.handlers = after_hello(agreement.speaks(WITHDRAW), agreement.speaks(LOOKUP), agreement.speaks(UNPUBLISH),
                                      agreement.speaks(COLLECTIONS))  # fmt: skip
    private = connection.service.private
    if private is not None:
        private.admit(connection)  # nothing but the proof of membership until it has passed


#: Until HELLO only the handshake is answered, in the connection's task.
#: Before HELLO: whatever comes first goes to the handshake, which refuses anything but HELLO.
GREETING: Final = Handlers(fast={}, task=dict.fromkeys(MESSAGE_TYPES.values(), handshake))
#: After an identity WELCOME, until IDENTIFY: whatever comes goes to identify(), which takes IDENTIFY only.
IDENTIFYING: Final = Handlers(fast={}, task=dict.fromkeys(MESSAGE_TYPES.values(), identify))
