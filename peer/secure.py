"""A peer in a private swarm: TLS 1.3 on every connection, and the proof of membership inside it (PROTOCOL.md §8.8).

The trio shell of ``common/tls.py`` and ``common/swarm.py``: :class:`Private`
holds a node's swarm and TLS contexts; :meth:`Private.connect` wraps an
outgoing stream in TLS and :meth:`Private.prove_client` proves membership
after WELCOME (``peer/greeting.py`` calls both); the chunk server wraps what
it accepts with :meth:`Private.accept` and checks the client with
:meth:`Private.prove_server` before it serves a single chunk. :func:`secured`
gives any outgoing connection to a holder (a download's sessions, sync's bulk
fetch) the same path: TLS, the proof, the holder pinned to its peer id.
"""

from __future__ import annotations

import functools
import socket
import ssl
from collections.abc import Awaitable, Callable

import attrs
import trio

from common.codec import encode_message
from common.errors import ConnectionClosed, Refused, RemoteProtocolError, ValidationError
from common.framing import MAGIC, ErrorCode
from common.identity import NodeKey
from common.messages import Error
from common.swarm import SWARM, Membership, SwarmFile
from peer.connection import Connection
from peer.greeting import Connect
from peer.tls_stream import TLSStream

__all__ = ["Private", "CAPABILITIES", "tls_handshake", "secured"]

#: What a plain (non-TLS) chunkswarm client is told before the close.
PLAIN_REFUSAL = "this peer serves a private swarm, over TLS only: run with --swarm FILE (the swarm's file)"
#: What a private node offers and requires, on every connection.
CAPABILITIES: dict[str, int] = {SWARM: 1}


async def tls_handshake(stream: TLSStream | trio.SSLStream[trio.abc.Stream], what: str) -> None:
    """Finish ``stream``'s TLS handshake; :class:`ConnectionClosed` saying why for anything else than TLS 1.3."""
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            raise ConnectionClosed(
                f"{what} does not speak TLS 1.3 ({cause.reason or cause}): only a private swarm's nodes do, "
                "with the same swarm file on both sides"
            ) from None
        raise ConnectionClosed(f"{what} closed the connection during the TLS handshake") from None
    except trio.ClosedResourceError:
        raise ConnectionClosed(f"{what}: connection closed during the TLS handshake") from None


@attrs.frozen(eq=False)
class Private:
    """A node's private swarm, with the TLS contexts it uses (built once)."""

    swarm: SwarmFile
    key: NodeKey
    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def create(cls, swarm: SwarmFile, key: NodeKey) -> Private:
        # Here, not at the top: x509 costs 50-75 ms to import, and only a private swarm's nodes need it.
        from common.tls import client_context, server_context

        return cls(swarm, key, server_context(key), client_context())

    async def connect(self, stream: trio.abc.Stream, what: str) -> TLSStream:
        """``stream`` with TLS on it, handshake done (``what`` names the other side in errors)."""
        tls = TLSStream(stream, self.client)
        try:
            await tls_handshake(tls, what)
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return tls

    async def accept(self, stream: trio.abc.Stream) -> TLSStream:
        """``stream`` with TLS on it; a plain chunkswarm client is told in clear why not (:class:`ConnectionClosed`)."""
        sock = getattr(stream, "socket", None)
        if sock is not None and await sock.recv(len(MAGIC), socket.MSG_PEEK) == MAGIC:  # a frame in clear
            await stream.send_all(encode_message(Error(ErrorCode.NOT_A_MEMBER, PLAIN_REFUSAL)))
            raise ConnectionClosed("a plain client, and this peer speaks TLS only (a private swarm)")
        tls = TLSStream(stream, self.server, server_side=True)
        await tls_handshake(tls, "the connecting side")
        return tls

    async def prove_client(self, conn: Connection, expected_id: bytes = b"") -> bytes:
        """Prove membership to the server on ``conn`` and check its proof; the server's node id.

        :class:`Refused` (NOT_A_MEMBER) if the server refuses us, :class:`RemoteProtocolError`
        if its own proof fails (another swarm, a relay, not the node id expected).
        """
        from common.tls import certificate_key  # loaded by create() already

        stream = conn.stream
        if not isinstance(stream, TLSStream | trio.SSLStream):
            raise ValidationError("a proof of membership needs a TLS connection")
        try:
            key = certificate_key(stream.getpeercert(binary_form=True))
        except ValidationError as exc:
            raise RemoteProtocolError(str(exc), error_code=ErrorCode.NOT_A_MEMBER) from None
        membership = Membership(self.swarm, self.key, "client", certificate_key=key, expected_id=expected_id)
        await conn.send(membership.challenge())
        membership.receive_challenge(_refusal(await conn.receive()))
        await conn.send(membership.proof())
        return membership.receive_proof(_refusal(await conn.receive()))

    async def prove_server(self, conn: Connection, claimed_peer_id: bytes, timeout: float) -> bytes:
        """Check the client's proof on ``conn``, then prove ourselves; the client's node id.

        A client that fails gets one ERROR NOT_A_MEMBER (raised as
        :class:`RemoteProtocolError` for the caller to send and log) and nothing else.
        """
        membership = Membership(self.swarm, self.key, "server", claimed_peer_id=claimed_peer_id)
        membership.receive_challenge(await conn.receive_within(timeout))
        await conn.send(membership.challenge())
        identifier = membership.receive_proof(await conn.receive_within(timeout))
        await conn.send(membership.proof())
        return identifier


def secured(
    private: Private | None, connect: Connect, what: str, expected_id: bytes
) -> tuple[Connect, Callable[[Connection], Awaitable[bytes]] | None]:
    """The ``connect`` and ``prove`` of :func:`peer.greeting.open_greeted` for a connection to the holder ``expected_id``.

    Open swarm (``private`` None): ``connect`` as it is, nothing proven. Private
    swarm: TLS on the stream ``connect`` opens, and after WELCOME the proof of
    membership, in which the holder must prove the node id whose first bytes are
    ``expected_id`` (the peer id the tracker listed): a member at another
    holder's address is refused too. ``what`` names the holder in errors.
    """
    if private is None:
        return connect, None

    async def connect_tls(address: tuple[str, int]) -> trio.abc.Stream:
        return await private.connect(await connect(address), what)

    return connect_tls, functools.partial(private.prove_client, expected_id=expected_id)


def _refusal(message: object) -> object:
    """``message``, unless it is the server's ERROR: then :class:`Refused` with its code."""
    if isinstance(message, Error):
        raise Refused(f"refused with {message.code_name}: {message.message}", code=message.code)
    return message
