"""Small structured-concurrency helpers shared by the peer's trio code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import trio

from common.errors import ChunkswarmError

__all__ = ["open_nursery"]


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery``, except that a lone error leaves as itself, not wrapped in an ExceptionGroup.

    Callers then catch ``ConnectionClosed`` or ``StorageError`` as usual.
    When several tasks failed, the first :class:`ChunkswarmError` wins (the
    others are usually its consequences); anything else stays a group.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        chosen = _chosen(group)
        if chosen is None:
            raise
    else:
        return
    # Raised here, outside the except block, the error gets no __context__: the group
    # that holds it would make a reference cycle only the cyclic collector frees.
    try:
        raise chosen
    finally:
        del chosen


def _chosen(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one error of ``group`` to raise in its place, or None to raise the group."""
    errors = [exc for exc in _leaves(group) if not isinstance(exc, trio.Cancelled)]
    if len(errors) == 1:
        return errors[0]
    for exc in errors:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
    for exc in errors:
        if isinstance(exc, ChunkswarmError):
            return exc
    return None
