"""Small structured-concurrency helpers shared by the peer's trio code: a nursery whose failures are reported whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

import trio

from common.errors import ChunkswarmError

__all__ = ["open_nursery", "TaskErrors", "leaves", "describe"]


def leaves(error: BaseException) -> list[BaseException]:
    """The errors in ``error``, nested groups flattened; ``[error]`` if it is no group."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    return [leaf for inner in error.exceptions for leaf in leaves(inner)]


def describe(error: BaseException) -> str:
    """Every error in ``error`` in a few words (its message, else its class), each distinct one once."""
    return _summary(leaves(error))


def _summary(errors: Iterable[BaseException]) -> str:
    counts = Counter(str(error) or type(error).__name__ for error in errors)
    return "; ".join(text if count == 1 else f"{text} ({count} times)" for text, count in counts.items())


class TaskErrors(ExceptionGroup[ChunkswarmError], ChunkswarmError):
    """Several tasks of one nursery failed, each with a chunkswarm error.

    A :class:`ChunkswarmError` (``except ChunkswarmError`` reports it like any
    other, and its message names every error) that is also an
    ``ExceptionGroup`` (``except*`` sorts its errors out by type).
    """

    @classmethod
    def of(cls, errors: Sequence[ChunkswarmError]) -> TaskErrors:
        """The group of ``errors``, with a message that names them all."""
        return cls(_summary(leaf for error in errors for leaf in leaves(error)), errors)

    def derive(self, excs: Sequence[ChunkswarmError]) -> TaskErrors:  # type: ignore[override]  # (typeshed's overloads)
        # except* splits a group with derive(): the parts stay TaskErrors, so still ChunkswarmErrors.
        return TaskErrors.of(excs)

    def __str__(self) -> str:
        return self.message  # not "message (2 sub-exceptions)": it is what the app shows a user


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
