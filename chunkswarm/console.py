"""Logging and console set-up for the command line (the only place that installs RichHandler).

rich is imported only when stderr may be a terminal (or a command prints a table): each swarm member is a
process of its own, usually with its stderr in a pipe or a file, and importing rich costs it 20-40 ms of CPU.
"""

from __future__ import annotations

import functools
import logging
import os
import pathlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["stderr_console", "terminal_console", "setup_logging", "log_file_option", "create_state_dir", "LOG_LEVELS"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@functools.cache
def stderr_console() -> Console:
    """The one stderr console that logs and progress bars share, so bars stay below log lines (rich loaded here)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:  # tables printed to a pipe would otherwise wrap at rich's 80-column default
        console.width = max(console.width, 160)
    return console


def terminal_console() -> Console | None:
    """:func:`stderr_console` if stderr is a terminal, else None, and then without importing rich.

    Not a terminal, as rich decides it: no tty, and neither ``TTY_COMPATIBLE=1`` nor ``FORCE_COLOR`` says otherwise.
    """
    isatty = getattr(sys.stderr, "isatty", None)
    maybe = (isatty is not None and isatty()) or os.environ.get("TTY_COMPATIBLE") == "1" or bool(os.environ.get("FORCE_COLOR"))
    if not maybe:
        return None
    console = stderr_console()
    return console if console.is_terminal else None


def setup_logging(level: str = "INFO", log_file: pathlib.Path | None = None) -> None:
    """One line per event: through rich on a terminal, plain lines otherwise.

    Plain lines when stderr is not a terminal (services under a supervisor,
    CI, pipes) because they are what log collectors expect, and because a
    rich-rendered line costs 0.5-2 ms of event-loop time against tens of
    microseconds: a tracker logging a thousand peers re-joining after a
    restart would otherwise stall for seconds.
    """
    handler: logging.Handler
    console = terminal_console()
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        # Milliseconds: a sync cycle's steps (scan, publish, fetch, apply) are read from these lines.
        handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s", datefmt="%H:%M:%S"))
    handlers: list[logging.Handler] = [handler]
    if log_file is not None:
        # In addition to the console, as plain lines whatever the console is: a file is read later, by people and by tools.
        try:
            file_handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot open the log file {log_file}: {exc.strerror or exc}") from None
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handlers.append(file_handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    # watchfiles says "1 change detected" at INFO for every batch; the seeder says what it did with it.
    logging.getLogger("watchfiles").setLevel(max(root.level, logging.WARNING))
    # hypercorn (the peer's HTTP gateway) says "Running on ..." at INFO; the gateway says where it is itself.
    logging.getLogger("peer.gateway.http").setLevel(max(root.level, logging.WARNING))


def log_file_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--log-file PATH``: the log also goes to PATH (appended), as plain lines."""
    return click.option("--log-file", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
                        help="Also write the log to this file (appended, plain lines).")(func)  # fmt: skip


def create_state_dir(state_dir: pathlib.Path) -> bool:
    """Create a peer's state folder if it is not there yet; True if it was created (the time to say where it is)."""
    if state_dir.is_dir():
        return False
    try:
        state_dir.mkdir(parents=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the state folder {state_dir}: {exc.strerror or exc}") from None
    return True
