"""Download and hashing progress as plain log lines, and the choice between them and rich's bars.

Apart from ``chunkswarm/ui.py`` so that a ``get`` or ``seed`` whose stderr is not a terminal (every swarm member a
benchmark or a supervisor starts) never imports rich: its bars are drawn only on a terminal.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from common.manifest import shown_name
from common.wording import format_rate, format_size, plural
from peer.progress import ProgressSink

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LogProgress", "progress_display", "short_source"]

logger = logging.getLogger(__name__)


def short_source(source: str) -> str:
    """A source peer's label without its address (``peer-1 (127.0.0.1:5000)`` -> ``peer-1``)."""
    return source.split(" (")[0] if " (" in source else source


class LogProgress:
    """Plain log lines (at most one a second) when stderr is not a terminal."""

    def __init__(self, interval: float = 1.0) -> None:
        self._interval = interval
        self._name = ""
        self._total = 0
        self._done = 0
        self._start = 0.0
        self._last = 0.0
        self._peers = 0
        self._sources: Counter[str] = Counter()
        self._hashing = False

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        name = shown_name(name)
        self._name, self._total, self._done, self._hashing = name, total_bytes, already_have_bytes, False
        self._start = self._last = time.monotonic()
        logger.info("%s: %s, %s already here", name, format_size(total_bytes), format_size(already_have_bytes))

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        name = shown_name(name)
        now = time.monotonic()
        if not self._hashing or name != self._name:
            self._name, self._total, self._hashing = name, total_bytes, True
            self._start = self._last = now
            logger.info("hashing %s (%s)", name, format_size(total_bytes))
        elif now - self._last >= self._interval:
            self._last = now
            rate = hashed_bytes / max(now - self._start, 1e-9)
            percent = 100 * hashed_bytes / total_bytes if total_bytes else 100
            logger.info("hashing %s: %.0f%% (%s)", name, percent, format_rate(rate))

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self._done += nbytes
        self._sources[short_source(source_label)] += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            rate = self._done / max(now - self._start, 1e-9)
            percent = 100 * self._done / self._total if self._total else 100
            logger.info("%s: %.0f%% (%s, %s)", self._name, percent, format_rate(rate), plural(self._peers, "peer"))

    def peers(self, count: int) -> None:
        self._peers = count

    def finished(self) -> None:
        elapsed = time.monotonic() - self._start
        if self._hashing:
            self._hashing = False
            logger.info("hashed %s in %.1f s", self._name, elapsed)
            return
        sources = ", ".join(f"{name}: {count}" for name, count in self._sources.most_common())
        logger.info("%s: done in %.1f s (%s)", self._name, elapsed, f"chunks from {sources}" if sources else "already complete, nothing downloaded")


@contextmanager
def progress_display(console: Console | None) -> Iterator[ProgressSink]:
    """A rich progress display on a terminal, log lines otherwise (``console`` None: not a terminal, rich not loaded)."""
    if console is None or not console.is_terminal:
        yield LogProgress()
        return
    from rich.progress import Progress

    from chunkswarm.ui import RichProgress, progress_columns

    with Progress(*progress_columns(), console=console, transient=False) as progress:
        yield RichProgress(progress)
