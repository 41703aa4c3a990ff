"""Small structured-concurrency helpers shared by the peer's trio code: a nursery whose failures are reported whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from common.errors import ChunkswarmError, TaskErrors, leaves

__all__ = ["open_nursery"]


@asynccontextmanager
async def open_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery``, raising what failed as simply as it can without dropping any of it.

    * One error (besides ``Cancelled``): that error itself, not wrapped in an
      ExceptionGroup, so callers catch ``ConnectionClosed`` or ``StorageError`` as usual.
    * Several chunkswarm errors: one :class:`TaskErrors` holding them all.
    * Several, one of them anything else (a bug, ``KeyboardInterrupt``): the group as trio raised it.

    The ``Cancelled`` beside an error are let go: cancellation is level-triggered, so
    the next checkpoint inside a cancelled scope raises it again.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        replacement = _replacement(group)
        if replacement is None:
            raise
    else:
        return
    # Raised here, outside the except block, the error gets no __context__: the group
    # that holds it would make a reference cycle only the cyclic collector frees.
    try:
        raise replacement
    finally:
        del replacement


def _replacement(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """What to raise in place of ``group``, or None to raise the group itself."""
    errors = [exc for exc in leaves(group) if not isinstance(exc, trio.Cancelled)]
    if len(errors) == 1:
        return errors[0]
    if errors and all(isinstance(exc, ChunkswarmError) for exc in errors):
        return TaskErrors.of([exc for exc in errors if isinstance(exc, ChunkswarmError)])
    return None  # a bug among them, or only Cancelled (then trio's cancel scopes take it from here)
