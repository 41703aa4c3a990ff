"""A minimal test-only tracker client over any ``trio.abc.Stream``, built on ``common.codec.Codec``.

Not the peer's real tracker client (``peer/tracker_client.py``): no retries,
no heartbeats of its own, just enough to drive the tracker in tests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence

import msgpack
import trio

from common.codec import CLOSED, NEED_DATA, Codec
from common.framing import Opcode, encode_header
from common.manifest import Manifest
from common.messages import Error, Hello, Message, Ok, Register, Welcome

__all__ = ["TrackerTestClient", "make_manifest", "raw_frame", "open_client"]


def make_manifest(name: str = "file.bin", chunks: int = 4, chunk_size: int = 1024, *, seed: bytes = b"") -> Manifest:
    """A self-consistent manifest of ``chunks`` full chunks with made-up (but fixed) chunk hashes."""
    hashes = [hashlib.sha256(seed + name.encode() + i.to_bytes(4, "big")).digest() for i in range(chunks)]
    return Manifest.from_hashes(name, chunks * chunk_size, chunk_size, hashes)


def raw_frame(opcode: Opcode, fields: Sequence[object]) -> bytes:
    """A frame whose payload is ``fields`` packed as is: for sending what a ``Message`` would refuse to build."""
    payload = msgpack.packb(list(fields), use_bin_type=True)
    return encode_header(opcode, len(payload)) + payload


class TrackerTestClient:
    """Send messages, read replies in order, see the connection close."""

    def __init__(self, stream: trio.abc.Stream, peer_id: bytes | None = None) -> None:
        self.stream = stream
        self.codec = Codec()
        self.peer_id = peer_id if peer_id is not None else os.urandom(20)

    async def send(self, *messages: Message) -> None:
        await self.stream.send_all(b"".join(self.codec.send(m) for m in messages))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> Message | None:
        """The next message, or None once the tracker has closed the connection."""
        while True:
            event = self.codec.next_event()
            if event is CLOSED:
                return None
            if event is not NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset by the other side: as good as closed
                data = b""
            self.codec.receive_data(data)

    async def request(self, message: Message) -> Message:
        await self.send(message)
        reply = await self.receive()
        assert reply is not None, f"connection closed instead of answering {type(message).__name__}"
        return reply

    async def hello(self, listen_port: int = 0, capabilities: Mapping[str, int] | None = None) -> Welcome:
        reply = await self.request(Hello(self.peer_id, listen_port, capabilities=capabilities or {}))
        assert isinstance(reply, Welcome), reply
        return reply

    async def register(self, listen_port: int = 6881, capabilities: Mapping[str, int] | None = None) -> None:
        await self.hello(listen_port, capabilities)
        reply = await self.request(Register(listen_port))
        assert reply == Ok(), reply

    async def expect_error(self, message: Message, code: int) -> Error:
        reply = await self.request(message)
        assert isinstance(reply, Error) and reply.code == code, reply
        return reply

    async def closed_after(self) -> list[Message]:
        """Every message until the tracker closes the connection."""
        messages = []
        while (message := await self.receive()) is not None:
            messages.append(message)
        return messages

    async def aclose(self) -> None:
        await self.stream.aclose()


async def open_client(host: str, port: int, peer_id: bytes | None = None) -> TrackerTestClient:
    return TrackerTestClient(await trio.open_tcp_stream(host, port), peer_id)
