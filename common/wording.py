"""Numbers as people read them, in one place for the CLI, the shell, the demo and the logs.

Sizes and rates in binary units everywhere (``8.8 KiB``, ``1.3 MiB/s``: a
``get`` that shows MB beside MiB makes a reader compare two units), and
counts with the noun in the right number (``1 chunk``, ``2 chunks``).
"""

from __future__ import annotations

__all__ = ["plural", "format_size", "format_rate"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def plural(count: int, noun: str, nouns: str = "") -> str:
    """``1 chunk``, ``0 chunks``, ``2 peers``; ``nouns`` for an irregular plural."""
    return f"{count} {noun}" if count == 1 else f"{count} {nouns or noun + 's'}"


def format_size(size: float) -> str:
    """``8983`` -> ``8.8 KiB``; whole bytes below 1 KiB (``624 B``)."""
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(size)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """``1363148.8`` -> ``1.3 MiB/s``; a fraction of a byte per second rounds to ``0 B/s``."""
    return f"{format_size(max(0, int(bytes_per_second)))}/s"
