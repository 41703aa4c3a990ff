"""What an idle connection costs the tracker (issue 16: at most 20 KB per idle peer, registry included).

Measured with tracemalloc over N real sockets to an in-process tracker on its
fast path (``io="epoll"``): each says HELLO and REGISTERs, then waits. The
figure counts every object the tracker keeps for such a connection (its
task, its frames, its trio socket, its codec, the peer it registered), and
not the clients' sockets, made before the count starts. No timing.
"""

from __future__ import annotations

import gc
import logging
import select
import socket
import tracemalloc
from typing import Final

import pytest
import trio
import trio.testing

from common.codec import encode_message
from common.messages import GetManifest, Hello, Publish, Published, Register
from tests.tracker_client_helper import make_manifest, open_client
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

CONNECTIONS: Final = 300
#: ~4.8 KB measured: the task's frames (5 coroutines: trio's handler, serve_socket,
#: serve_connection, HubConnection.run and trio's wait) and the task (~2 KB), trio's
#: socket stream (~0.6 KB), the connection and its codec, the HELLO it keeps, the
#: peer registered (~0.5 KB). Was ~6.6 KB: a read's frame and the hub's under the
#: wait, the closure cancelling it, an idle cancel scope (~0.8 KB with its status
#: and sets; the hub times parked tasks out instead), the last bytes read and the
#: formatted address, kept by every idle connection.
BYTES_PER_IDLE_CONNECTION: Final = 5_500


async def _settle(running: RunningTracker, clients: list[socket.socket]) -> None:
    """Wait until every client is registered and has had its replies (read and dropped), all by polling."""
    for _ in range(500):
        if running.service.registry.peer_count == len(clients):
            break
        await trio.sleep(0.01)
    assert running.service.registry.peer_count == len(clients)
    await trio.sleep(0.05)
    for client in clients:
        try:
            while client.recv(65536):
                pass
        except BlockingIOError:
            pass
    await trio.testing.wait_all_tasks_blocked()


needs_epoll = pytest.mark.skipif(not hasattr(select, "epoll"), reason="the fast path needs epoll (Linux)")


@needs_epoll
async def test_an_idle_registered_connection_costs_under_5_5_kb(nursery: trio.Nursery) -> None:
    caps = CONNECTIONS + 16
    config = TrackerConfig(port=0, io="epoll", max_connections=caps, max_connections_per_ip=caps, max_peers_per_ip=caps)
    running: RunningTracker = await nursery.start(serve_tracker, config)
    clients = [socket.socket() for _ in range(CONNECTIONS)]
    greetings = [encode_message(Hello(i.to_bytes(20, "big"), 10_000 + i)) + encode_message(Register(10_000 + i)) for i in range(CONNECTIONS)]
    try:
        gc.collect()
        # The tracker's memory, not the log records of the window: where an earlier test of this process left the
        # root logger at INFO or DEBUG, pytest keeps every record of 300 registrations (~2 KB each) in its capture.
        logging.disable(logging.CRITICAL)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i, client in enumerate(clients):
                client.connect((running.host, running.port))  # the kernel completes it: the listener accepts later
                client.setblocking(False)
                client.sendall(greetings[i])
                if i % 50 == 49:
                    await trio.sleep(0.01)  # let the tracker accept and answer as they come
            await _settle(running, clients)
            gc.collect()
            per_connection = (tracemalloc.get_traced_memory()[0] - before) / CONNECTIONS
        finally:
            tracemalloc.stop()
            logging.disable(logging.NOTSET)
        assert running.stats()["connections"] == CONNECTIONS
        assert per_connection < BYTES_PER_IDLE_CONNECTION, f"{per_connection:.0f} bytes per idle connection"
    finally:
        for client in clients:
            client.close()


@needs_epoll
async def test_a_client_that_never_reads_its_replies_is_dropped_at_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # The hub's connections have no idle scope: a send the client does not take is bounded on its own.
    autojump_clock.autojump_threshold = 0.5  # real seconds with every task blocked: not while a socket delivers
    config = TrackerConfig(port=0, io="epoll", idle_timeout=60.0)
    running: RunningTracker = await nursery.start(serve_tracker, config)
    publisher = await open_client(running.host, running.port)
    await publisher.register()
    manifest = make_manifest("large.iso", chunks=1 << 17)  # a 4 MiB frame
    assert await publisher.request(Publish(manifest)) == Published(manifest.file_id)
    await publisher.aclose()
    reader = socket.create_connection((running.host, running.port))
    reader.sendall(encode_message(Hello(bytes(20), 0)) + encode_message(GetManifest(manifest.file_id)) * 8)  # and reads nothing
    try:
        with trio.fail_after(3 * config.idle_timeout):
            while running.service.unsent == 0:  # its replies have filled the socket
                await trio.sleep(0.01)
            while running.stats()["connections"]:
                await trio.sleep(config.idle_timeout / 8)
        assert running.service.unsent == 0
    finally:
        reader.close()
