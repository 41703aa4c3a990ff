"""The tracker's two state backends for the tests: embedded (memory + SQLite) and shared (a real Redis).

``tests/conftest.py`` parametrizes the ``state`` fixture over both: None, or the
``redis://`` address of the session's own ``redis-server`` (started on a free port
without persistence, emptied before each test). A test that builds a tracker
passes it on: ``TrackerConfig(state=state)`` for ``serve_tracker``, or
:func:`tracker_service` for a service on memory streams.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import attrs
import trio

from tests.system import program
from tracker.config import TrackerConfig
from tracker.service import TrackerService
from tracker.store import Store

__all__ = ["RedisServer", "run_redis", "tracker_service"]


@attrs.frozen
class RedisServer:
    port: int
    process: subprocess.Popen[bytes] = attrs.field(eq=False, repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def command(self, *words: bytes) -> bytes:
        """One command over a plain socket (RESP); the first line of the answer."""
        request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while not answer.endswith(b"\r\n"):
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        return answer.split(b"\r\n", 1)[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def run_redis() -> Iterator[RedisServer]:
    """A ``redis-server`` on a free port of 127.0.0.1, without persistence; stopped on exit."""
    path = program("redis-server")
    for _attempt in range(5):  # the free port may be taken before the server binds it
        port = _free_port()
        process = subprocess.Popen(
            [path, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--databases", "16"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        server = RedisServer(port, process)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if server.command(b"PING") == b"+PONG":
                    break
            except OSError:
                time.sleep(0.02)
        if process.poll() is None:
            break
    else:
        raise RuntimeError("redis-server did not start")
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.asynccontextmanager
async def tracker_service(config: TrackerConfig, state: str | None = None) -> AsyncIterator[TrackerService]:
    """A service on ``config`` with the embedded state (``state`` None) or the Redis at ``state``, its replication running."""
    if state is None:
        with Store(None) as store:
            yield TrackerService.create(config, store)
        return
    from tracker.shared import Replicator, SharedRegistry, open_shared_state

    async with open_shared_state(state) as shared, trio.open_nursery() as nursery:
        position = await shared.log_position()
        service = TrackerService.create(config, shared, await shared.load_catalogue(), [], SharedRegistry)
        replicator = Replicator(service, shared, position)
        await replicator.load()
        nursery.start_soon(replicator.run)
        yield service
        nursery.cancel_scope.cancel()
