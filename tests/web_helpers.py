"""A real tracker with its web UI for the web tests, and a way to publish files and join peers on it.

:class:`TrackerThread` runs the tracker in a thread of its own (``trio.run``),
for tests that are not trio tests themselves: the browser (Playwright's sync
API) and schemathesis drive it from the test's thread over real HTTP, and
the test asks the tracker's thread to publish files or register peers over
the real protocol (:meth:`TrackerThread.call`).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio

from common.manifest import Manifest
from common.messages import Announce, Ok, Publish, Published
from tests.tracker_client_helper import TrackerTestClient, open_client
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

__all__ = ["TrackerThread", "seed", "join_peer"]

T = TypeVar("T")


async def seed(running: RunningTracker, manifest: Manifest, listen_port: int, chunks: Sequence[tuple[int, int]] | None = None) -> TrackerTestClient:
    """A peer at 127.0.0.1:``listen_port`` that publishes ``manifest`` and announces ``chunks`` (all: None); it stays connected."""
    client = await open_client(running.host, running.port)
    await client.register(listen_port)
    assert await client.request(Publish(manifest)) == Published(manifest.file_id)
    ranges = tuple(chunks) if chunks is not None else ((0, manifest.chunk_count),)
    assert await client.request(Announce(manifest.file_id, ranges)) == Ok()
    return client


async def join_peer(running: RunningTracker, listen_port: int) -> TrackerTestClient:
    client = await open_client(running.host, running.port)
    await client.register(listen_port)
    return client


class TrackerThread:
    """A tracker (web UI on a free port) in a thread; :meth:`call` runs a coroutine function there."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig(port=0, http_host="127.0.0.1")
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self.running: RunningTracker | None = None
        self.clients: list[TrackerTestClient] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="tracker", daemon=True)

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._cancel:
            async with trio.open_nursery() as nursery:
                self.running = await nursery.start(serve_tracker, self.config)
                self._started.set()
                await trio.sleep_forever()

    def start(self) -> TrackerThread:
        self._thread.start()
        if not self._started.wait(30) or self.running is None:
            raise RuntimeError(f"the tracker did not start: {self._error!r}")
        return self

    @property
    def url(self) -> str:
        assert self.running is not None and self.running.http_url is not None
        return self.running.http_url

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def seed(self, manifest: Manifest, listen_port: int, chunks: Sequence[tuple[int, int]] | None = None) -> None:
        assert self.running is not None
        self.clients.append(self.call(seed, self.running, manifest, listen_port, chunks))

    def join(self, listen_port: int) -> None:
        assert self.running is not None
        self.clients.append(self.call(join_peer, self.running, listen_port))

    def stop(self) -> None:
        async def cancel() -> None:
            for client in self.clients:
                await client.aclose()
            assert self._cancel is not None
            self._cancel.cancel()

        if self._thread.is_alive():
            self.call(cancel)
        self._thread.join(30)

    def __enter__(self) -> TrackerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
