"""A mock clock for code that runs blocking work in worker threads (``trio.to_thread.run_sync``).

An autojump clock jumps as soon as every task is blocked, also while one waits for a worker
thread, straight to the next deadline: a peer would be late by a whole request timeout while its
chunk is being written. Waiting for 20 ms of real quiet before jumping was not enough (opening
the first part file of a test process took 61 ms, and the clock jumped to a test's 300 s bound).
This clock does not jump while a worker thread runs, and jumps at once otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

__all__ = ["thread_aware_clock"]


def thread_aware_clock(monkeypatch: pytest.MonkeyPatch) -> trio.testing.MockClock:
    """An autojump clock held still while any ``trio.to_thread.run_sync`` call runs (patched for the test)."""
    clock = trio.testing.MockClock(autojump_threshold=0.0)
    run_sync = trio.to_thread.run_sync
    running = 0

    async def held_still(*args: Any, **kwargs: Any) -> Any:
        nonlocal running
        running += 1
        clock.autojump_threshold = math.inf
        try:
            return await run_sync(*args, **kwargs)
        finally:
            running -= 1
            if not running:
                clock.autojump_threshold = 0.0

    monkeypatch.setattr(trio.to_thread, "run_sync", held_still)
    return clock
