"""A tracker of a private swarm: TLS 1.3 on every connection, and nothing served before the proof of membership.

PROTOCOL.md §8.8. :func:`accept` runs when a connection is accepted (the
address checked against ``--allow``, a plain chunkswarm client told in clear
that this tracker speaks TLS only, then the TLS handshake); the greeting
(``tracker.greeting.handshake``) requires the capability ``swarm`` and hands
the connection to :meth:`PrivateTracker.admit`, whose :data:`PROVING` table answers the
proof and nothing else. Only once the client's proof has passed does the
connection get the tables of an open tracker (and this tracker's own proof).

TLS streams take the generic streams path (``tracker.connection``), never
the readiness hub, which reads raw sockets.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import TYPE_CHECKING, Final

import attrs
import trio

from common.address import format_address
from common.codec import encode_message
from common.errors import RemoteProtocolError
from common.framing import MAGIC, ErrorCode
from common.identity import NodeKey, short_id
from common.messages import MESSAGE_TYPES, Error, Message, SwarmChallenge, SwarmProof
from common.swarm import Membership, SwarmFile
from common.tls import server_context
from tracker.handlers import Handlers

if TYPE_CHECKING:
    from tracker.connection import Connection

__all__ = ["PrivateTracker", "PROVING", "PLAIN_REFUSAL"]

log = logging.getLogger(__name__)

#: How long a new connection has to start TLS and finish its handshake.
TLS_TIMEOUT: Final = 10.0
#: What a plain (non-TLS) chunkswarm client is told before the close.
PLAIN_REFUSAL: Final = "this tracker serves a private swarm, over TLS only: run with --swarm FILE (the swarm's file)"


@attrs.frozen(eq=False)
class PrivateTracker:
    swarm: SwarmFile
    key: NodeKey
    context: ssl.SSLContext

    @classmethod
    def create(cls, swarm: SwarmFile, key: NodeKey) -> PrivateTracker:
        return cls(swarm, key, server_context(key))

    async def accept(self, stream: trio.SocketStream, where: str) -> trio.abc.Stream | None:
        """``stream`` with TLS on it, or None (closed, the reason logged) for a client that does not speak TLS."""
        try:
            with trio.fail_after(TLS_TIMEOUT):
                first = await stream.socket.recv(len(MAGIC), socket.MSG_PEEK)
                if first == MAGIC:  # a chunkswarm frame in clear: an open swarm's client
                    log.warning("refusing %s: a plain client, and this tracker speaks TLS only", where)
                    await stream.send_all(encode_message(Error(ErrorCode.NOT_A_MEMBER, PLAIN_REFUSAL)))
                    return None
                tls = trio.SSLStream(stream, self.context, server_side=True)
                await tls.do_handshake()
                return tls
        except trio.TooSlowError:
            log.info("closing %s: no TLS handshake within %gs", where, TLS_TIMEOUT)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            cause = exc.__cause__
            log.info("closing %s: the TLS handshake failed (%s)", where, getattr(cause, "reason", None) or cause or exc)
        return None

    def admit(self, connection: Connection) -> None:
        """After WELCOME: nothing but the proof until it has passed; then the tables the greeting chose."""
        assert connection.agreement is not None
        membership = Membership(self.swarm, self.key, "server", claimed_peer_id=connection.agreement.hello.peer_id)
        connection.proving = (membership, connection.handlers)
        connection.handlers = PROVING


async def _challenge(connection: Connection, request: SwarmChallenge) -> bytes:
    assert connection.proving is not None
    membership, _ = connection.proving
    membership.receive_challenge(request)
    return encode_message(membership.challenge())


async def _proof(connection: Connection, request: SwarmProof) -> bytes:
    assert connection.proving is not None
    membership, admitted = connection.proving
    identifier = membership.receive_proof(request)  # or ERROR NOT_A_MEMBER, the reason logged, and a close
    connection.handlers, connection.proving = admitted, None
    log.info("member %s admitted from %s", short_id(identifier), format_address(connection.host, connection.port))
    return encode_message(membership.proof())


async def _before_proof(connection: Connection, request: Message) -> bytes:
    raise RemoteProtocolError(f"{request.OPCODE.name} before the proof of membership", error_code=ErrorCode.NOT_A_MEMBER)


#: Between WELCOME and a passed proof: the proof, and any other request refused (ERROR NOT_A_MEMBER and a close).
PROVING: Final = Handlers(fast={}, task={**dict.fromkeys(MESSAGE_TYPES.values(), _before_proof), SwarmChallenge: _challenge, SwarmProof: _proof})
