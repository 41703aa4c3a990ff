"""The connecting side of the handshake, for every outgoing connection of a peer (to the tracker, to other peers).

``common/handshake.py`` holds the rules; this is its trio shell: connect, say
HELLO, read the answer. A server of protocol 1 as first specified refuses a
HELLO that offers capabilities (PROTOCOL.md §8.3); then the handshake is
tried once more, on a new connection, offering nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from common.address import format_address
from common.codec import Codec
from common.handshake import RETRY_PLAIN, Agreement, ClientHandshake
from common.identity import NodeKey
from common.messages import Hello
from common.swarm import SWARM
from peer.connection import Connection

__all__ = ["Connect", "connect_tcp", "open_greeted"]

logger = logging.getLogger(__name__)

#: Opens a stream to an address: a TCP connection for real peers, memory streams in tests.
Connect = Callable[[tuple[str, int]], Awaitable[trio.abc.Stream]]


async def connect_tcp(address: tuple[str, int]) -> trio.abc.Stream:
    """The :data:`Connect` of a real peer: a TCP connection."""
    return await trio.open_tcp_stream(*address)


async def open_greeted(
    connect: Connect,
    address: tuple[str, int],
    hello: Hello,
    *,
    make_codec: Callable[[], Codec] = Codec,
    answer_timeout: float | None = None,
    key: NodeKey | None = None,
    prove: Callable[[Connection], Awaitable[object]] | None = None,
) -> tuple[Connection, Agreement]:
    """A connection to ``address`` whose handshake is done, and what it agreed on.

    Raises what connecting raises (``OSError``), :class:`~common.errors.Refused`
    when the other side answers HELLO with ERROR (its ``code`` says why),
    :class:`~common.errors.RemoteProtocolError` for an answer that breaks the
    rules, :class:`~common.errors.ConnectionClosed` if the connection ends
    first, :class:`~common.errors.PeerTimeout` if no answer comes within
    ``answer_timeout`` (None: the caller bounds the whole with its own timeout).

    With ``key``, the HELLO offers ``identity`` (PROTOCOL.md §8.6): a server
    that agrees proves its key (``Agreement.remote_node``), and this side
    identifies and waits for the OK, so a refusal is said here and not taken
    for the reply to a later request.

    ``prove``, in a private swarm, proves membership after that (PROTOCOL.md §8.8,
    ``peer/secure.py``): then the capability swarm is required, and there is no
    retry without capabilities.
    """
    handshake = ClientHandshake(hello, key=key, required=frozenset({SWARM}) if prove else frozenset())
    while True:
        conn = Connection(await connect(address), codec=make_codec())
        try:
            await conn.send(handshake.hello)
            answer = await (conn.receive() if answer_timeout is None else conn.receive_within(answer_timeout))
            outcome = handshake.receive(answer)
            if handshake.identify is not None:
                await conn.send(handshake.identify)
                answer = await (conn.receive() if answer_timeout is None else conn.receive_within(answer_timeout))
                outcome = handshake.receive(answer)
            if prove is not None and outcome is not RETRY_PLAIN:
                await prove(conn)
        except BaseException:
            await conn.aclose()
            raise
        if outcome is not RETRY_PLAIN:
            return conn, outcome
        await conn.aclose()
        logger.debug("%s refused the capabilities offered: it speaks protocol 1 as first specified; greeting it without them",
                     format_address(*address))  # fmt: skip
        handshake = handshake.plain()
