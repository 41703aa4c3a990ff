"""Fixtures shared by the tracker tests: the state backends (``tests/state_backends.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.state_backends import RedisServer, run_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One ``redis-server`` for the whole session (skipped, or failed under CI, where Redis is not installed)."""
    with run_redis() as server:
        yield server


@pytest.fixture(params=["embedded", "redis"])
def state(request: pytest.FixtureRequest) -> str | None:
    """The tracker's state backend: None (in memory + SQLite), or a Redis database emptied for this test."""
    if request.param == "embedded":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    server.command(b"FLUSHALL")
    return server.url(0)
