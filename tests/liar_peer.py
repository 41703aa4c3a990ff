"""A test peer that speaks the real protocol (``common.codec``) and serves what its ``--mode`` says.

    python -m tests.liar_peer PATH --tracker HOST:PORT --chunk-size N --mode MODE [--budget-file F]

It hashes PATH, registers with the tracker, publishes the manifest and announces
every chunk, heartbeats, then serves chunk requests:

* ``honest``: the right bytes;
* ``corrupt``: the right length, one byte flipped;
* ``truncate``: a well-formed CHUNK_DATA with half the bytes;
* ``stall``: accepts the connection and the requests, never answers;
* ``chatter``: as ``stall``, but sends a CHUNK_DATA about another file every 0.3 s;
* ``oversize``: a CHUNK_DATA header that claims 16 MiB, then the chunk and padding.

``--budget-file`` gates any mode: chunks are sent only while the number sent
is below the integer in that file (re-read every 20 ms), so a test decides
exactly how far a download gets before it acts. Log lines on stderr:
``liar serving on HOST:PORT``, ``liar announced NAME``, ``liar sent N chunks``,
``liar holding a request``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

import trio

from common.address import parse_address
from common.codec import CLOSED, NEED_DATA, Codec
from common.manifest import Manifest, build_manifest
from common.messages import Announce, ChunkData, Heartbeat, Hello, Message, Publish, Register, RequestChunk, Welcome

MODES = ("honest", "corrupt", "truncate", "stall", "chatter", "oversize")


def say(text: str) -> None:
    print(f"liar {text}", file=sys.stderr, flush=True)


class Liar:
    def __init__(self, path: pathlib.Path, manifest: Manifest, mode: str, budget_file: pathlib.Path | None) -> None:
        self.path = path
        self.manifest = manifest
        self.mode = mode
        self.budget_file = budget_file
        self.sent = 0
        self.peer_id = os.urandom(20)
        self.fd = os.open(path, os.O_RDONLY)
        self.said_holding = False

    def budget(self) -> int:
        if self.budget_file is None:
            return 1 << 62
        try:
            return int(self.budget_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    async def wait_for_budget(self) -> None:
        while self.sent >= self.budget() or self.mode in ("stall", "chatter"):
            if not self.said_holding:
                self.said_holding = True
                say("holding a request")
            await trio.sleep(0.02)

    def payload(self, index: int) -> bytes:
        data = os.pread(self.fd, self.manifest.chunk_length(index), self.manifest.chunk_offset(index))
        if self.mode == "corrupt":
            return bytes([data[0] ^ 0xFF]) + data[1:]
        if self.mode == "truncate":
            return data[: len(data) // 2]
        return data

    # -- serving chunks ----------------------------------------------------------
    async def serve_connection(self, stream: trio.SocketStream) -> None:
        codec = Codec()
        requests_send, requests_receive = trio.open_memory_channel[RequestChunk](1000)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.answer, stream, codec, requests_receive)
                async with requests_send:
                    while True:
                        event = codec.next_event()
                        if event is NEED_DATA:
                            codec.receive_data(await stream.receive_some(65536))
                            continue
                        if event is CLOSED:
                            break
                        if isinstance(event, Hello):
                            await stream.send_all(codec.send(Welcome(self.peer_id, 0, "127.0.0.1", 1, 1, f"liar-{self.mode}")))
                            if self.mode == "chatter":
                                nursery.start_soon(self.chatter, stream, codec)
                        elif isinstance(event, RequestChunk):
                            await requests_send.send(event)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, Exception) as exc:  # a test helper: any end ends it
            say(f"connection ended: {exc!r}")
        finally:
            await trio.aclose_forcefully(stream)

    async def chatter(self, stream: trio.SocketStream, codec: Codec) -> None:
        while True:
            await stream.send_all(codec.send(ChunkData(bytes(32), 0, b"x")))  # about no file the downloader wants
            await trio.sleep(0.3)

    async def answer(self, stream: trio.SocketStream, codec: Codec, requests: trio.MemoryReceiveChannel[RequestChunk]) -> None:
        async for request in requests:
            await self.wait_for_budget()
            data = self.payload(request.index)
            if self.mode == "oversize":
                frame = codec.chunk_data_prefix(request.file_id, request.index, 2**24 - 36) + data
                await stream.send_all(frame + bytes(2**24 - 36 - len(data)))
            else:
                await stream.send_all(codec.send(ChunkData(request.file_id, request.index, data)))
            self.sent += 1
            say(f"sent {self.sent} chunks")

    # -- the tracker ---------------------------------------------------------------
    async def tracker_loop(self, address: tuple[str, int], port: int) -> None:
        announced = False
        while True:
            try:
                stream = await trio.open_tcp_stream(*address)
            except OSError:
                await trio.sleep(0.2)
                continue
            codec = Codec()

            async def request(message: Message, stream: trio.SocketStream = stream, codec: Codec = codec) -> Message:
                await stream.send_all(codec.send(message))
                while (event := codec.next_event()) is NEED_DATA:
                    codec.receive_data(await stream.receive_some(65536))
                if event is CLOSED:
                    raise trio.BrokenResourceError("tracker closed")
                return event  # type: ignore[return-value]

            try:
                welcome = await request(Hello(self.peer_id, port, 1, f"liar-{self.mode}"))
                assert isinstance(welcome, Welcome), welcome
                await request(Register(port))
                await request(Publish(self.manifest))
                await request(Announce(self.manifest.file_id, ((0, self.manifest.chunk_count),)))
                if not announced:
                    announced = True
                    say(f"announced {self.manifest.name}")
                while True:
                    await trio.sleep(welcome.heartbeat_interval or 1.0)
                    await request(Heartbeat())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, AssertionError, Exception) as exc:
                say(f"tracker connection lost: {exc!r}")
                await trio.aclose_forcefully(stream)
                await trio.sleep(0.2)


async def main(args: argparse.Namespace) -> None:
    path = pathlib.Path(args.path)
    manifest = await trio.to_thread.run_sync(build_manifest, path, args.chunk_size)
    liar = Liar(path, manifest, args.mode, pathlib.Path(args.budget_file) if args.budget_file else None)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    say(f"serving on 127.0.0.1:{port}")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, liar.serve_connection, listeners)
        nursery.start_soon(liar.tracker_loop, parse_address(args.tracker), port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--tracker", required=True)
    parser.add_argument("--chunk-size", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="honest")
    parser.add_argument("--budget-file", default=None)
    trio.run(main, parser.parse_args())
