"""What an idle connection costs the tracker (issue 16: at most 20 KB per idle peer, registry included).

Measured with tracemalloc over N real sockets to an in-process tracker on its
fast path (``io="epoll"``): each says HELLO and REGISTERs, then waits. The
figure counts every object the tracker keeps for such a connection (its
task, its frames, its trio socket, its codec, the peer it registered), and
not the clients' sockets, made before the count starts. No timing.
"""

from __future__ import annotations

import gc
import select
import socket
import tracemalloc
from typing import Final

import pytest
import trio

from common.codec import encode_message
from common.messages import Hello, Register
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

CONNECTIONS: Final = 300
#: ~5.7 KB measured: the task's frames (5 coroutines: trio's handler, serve_socket,
#: serve_connection, HubConnection.run and trio's wait), the task and its idle scope
#: (~1.3 KB), trio's socket stream (~0.6 KB), the connection and its codec, the
#: HELLO it keeps, the peer registered (~0.5 KB). Was ~6.6 KB: a read's frame and
#: the hub's under the wait, the closure cancelling it, the last bytes read and the
#: formatted address, kept by every idle connection.
BYTES_PER_IDLE_CONNECTION: Final = 6_000


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


@pytest.mark.skipif(not hasattr(select, "epoll"), reason="the fast path needs epoll (Linux)")
async def test_an_idle_registered_connection_costs_under_6_kb(nursery: trio.Nursery) -> None:
    caps = CONNECTIONS + 16
    config = TrackerConfig(port=0, io="epoll", max_connections=caps, max_connections_per_ip=caps, max_peers_per_ip=caps)
    running: RunningTracker = await nursery.start(serve_tracker, config)
    clients = [socket.socket() for _ in range(CONNECTIONS)]
    greetings = [encode_message(Hello(i.to_bytes(20, "big"), 10_000 + i)) + encode_message(Register(10_000 + i)) for i in range(CONNECTIONS)]
    try:
        gc.collect()
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
        assert running.stats()["connections"] == CONNECTIONS
        assert per_connection < BYTES_PER_IDLE_CONNECTION, f"{per_connection:.0f} bytes per idle connection"
    finally:
        for client in clients:
            client.close()
