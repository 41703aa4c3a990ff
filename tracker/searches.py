"""The tracker's log of recent searches: time, pattern, how many files matched, and who asked (protocol or web).

A bounded ring buffer (``collections.deque`` with ``maxlen``): recording a
search is one append, cheap enough for the hub's fast path (LOOKUP), and the
log never holds more than ``size`` entries however many searches arrive. The
stats page and ``/api/v1/stats`` read it (``tracker/web``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Final, Literal

import attrs

__all__ = ["SearchLog", "Search", "SEARCH_LOG_SIZE", "MAX_LOGGED_PATTERN"]

#: Searches kept: enough for a screenful and then some.
SEARCH_LOG_SIZE: Final = 200
#: A longer pattern is logged cut to this many characters (a log entry stays small).
MAX_LOGGED_PATTERN: Final = 120

Source = Literal["LIST_FILES", "LOOKUP", "web", "api"]


@attrs.frozen
class Search:
    """One search: when (seconds since the epoch), the pattern, how many files matched it, and through what."""

    at: float
    pattern: str
    results: int
    source: Source


@attrs.define(eq=False)
class SearchLog:
    """The last ``size`` searches, oldest first; ``clock`` gives wall-clock seconds (injected for tests)."""

    size: int = SEARCH_LOG_SIZE
    clock: Callable[[], float] = time.time
    total: int = 0
    _entries: deque[tuple[float, str, int, Source]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._entries = deque(maxlen=self.size)

    def record(self, pattern: str, results: int, source: Source) -> None:
        # Tuples, not Search objects: this runs on the fast path of every LOOKUP.
        self._entries.append((self.clock(), pattern[:MAX_LOGGED_PATTERN], results, source))
        self.total += 1

    def recent(self, limit: int | None = None) -> list[Search]:
        """The newest ``limit`` searches (None: all kept), newest first."""
        entries: Iterator[tuple[float, str, int, Source]] = reversed(self._entries)
        chosen = list(entries)[:limit] if limit is not None else list(entries)
        return [Search(*entry) for entry in chosen]

    def __len__(self) -> int:
        return len(self._entries)
