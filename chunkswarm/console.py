"""Logging and console set-up for the command line (the only place that installs RichHandler)."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["console", "setup_logging", "LOG_LEVELS"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Logs and progress bars share one stderr console so bars stay below log lines.
console = Console(stderr=True)


def setup_logging(level: str = "INFO") -> None:
    """One line per event: through rich on a terminal, plain lines otherwise.

    Plain lines when stderr is not a terminal (services under a supervisor,
    CI, pipes) because they are what log collectors expect, and because a
    rich-rendered line costs 0.5-2 ms of event-loop time against tens of
    microseconds: a tracker logging a thousand peers re-joining after a
    restart would otherwise stall for seconds.
    """
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
        # Tables printed to a pipe would otherwise wrap at rich's 80-column default.
        console.width = max(console.width, 160)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
