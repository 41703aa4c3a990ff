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
    """Route every logger through rich: one line per event, timestamps, no tracebacks for user errors."""
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # When stderr is not a terminal (CI, pipes), rich still writes plain lines.
    if not sys.stderr.isatty():
        console.width = max(console.width, 160)
