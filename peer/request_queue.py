"""A chunk server connection's queue of requests: answered in arrival order, cancellable while queued (PROTOCOL.md §7.2)."""

from __future__ import annotations

import collections
from collections.abc import Callable

import trio

__all__ = ["RequestQueue"]


class RequestQueue:
    """Queued (file id, index) requests of one connection, in arrival order, cancellable."""

    def __init__(self) -> None:
        self._items: collections.OrderedDict[tuple[bytes, int], None] = collections.OrderedDict()
        self._wakeup = trio.Event()
        self._answered = trio.Event()
        #: True while the sender is answering a request taken from the queue.
        self.sending = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: tuple[bytes, int]) -> None:
        self._items[key] = None
        self._wakeup.set()

    def discard(self, key: tuple[bytes, int]) -> None:
        self._items.pop(key, None)

    async def get(self) -> tuple[bytes, int]:
        """The next request to answer; the one taken before it has been answered."""
        self.sending = False
        self._answered.set()
        while not self._items:
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        key, _ = self._items.popitem(last=False)
        self.sending = True
        return key

    def take_if(self, wanted: Callable[[tuple[bytes, int]], bool]) -> tuple[bytes, int] | None:
        """The next request, taken now if ``wanted`` says so (else it stays first in line); None if there is none."""
        if not self._items:
            return None
        key = next(iter(self._items))
        if not wanted(key):
            return None
        del self._items[key]
        return key

    async def drained(self) -> None:
        """Wait until every queued request has been answered."""
        while self._items or self.sending:
            self._answered = trio.Event()
            await self._answered.wait()
