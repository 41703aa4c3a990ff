"""peer/tasks.py: what a nursery raises when its tasks fail, one error or several."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from common.errors import ChunkswarmError, ConnectionClosed, PeerTimeout, StorageError, TaskErrors, describe, leaves
from peer.tasks import open_nursery


async def fail(error: BaseException) -> None:
    raise error  # before any checkpoint: a task started beside it fails too, uncancelled


async def fail_together(*errors: BaseException) -> None:
    """A nursery of tasks that fail with ``errors``, every one of them."""
    async with open_nursery() as nursery:
        for error in errors:
            nursery.start_soon(fail, error)


async def test_a_lone_error_leaves_as_itself() -> None:
    error = ConnectionClosed("gone")
    with pytest.raises(ConnectionClosed) as caught:
        async with open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)  # cancelled by the failure: its Cancelled is no second error
            nursery.start_soon(fail, error)
    assert caught.value is error
    # Raised outside the except block: no __context__, so no cycle through the group that held it.
    assert error.__context__ is None


async def test_several_chunkswarm_errors_leave_together() -> None:
    closed, timeout = ConnectionClosed("gone"), PeerTimeout("no answer within 5 s")
    with pytest.raises(ChunkswarmError) as caught:
        await fail_together(closed, timeout)
    assert isinstance(caught.value, TaskErrors)
    assert set(caught.value.exceptions) == {closed, timeout}
    assert set(str(caught.value).split("; ")) == {"gone", "no answer within 5 s"}
    assert caught.value.__context__ is None


async def test_the_errors_of_a_group_are_sorted_out_by_type() -> None:
    seen: list[str] = []
    try:
        await fail_together(ConnectionClosed("gone"), StorageError("disk full"))
    except* ConnectionClosed as closed:
        seen.append(describe(closed))
    except* StorageError as storage:
        seen.append(describe(storage))
    assert seen == ["gone", "disk full"]
    # What except* leaves unhandled is still a chunkswarm error, naming only what is left.
    with pytest.raises(ChunkswarmError, match=r"^disk full$") as caught:
        try:
            raise TaskErrors.of([ConnectionClosed("gone"), StorageError("disk full")])
        except* ConnectionClosed:
            pass
    assert isinstance(caught.value, TaskErrors)


async def test_a_bug_among_several_errors_leaves_the_whole_group() -> None:
    bug, closed = KeyError("oops"), ConnectionClosed("gone")
    with pytest.raises(ExceptionGroup) as caught:
        await fail_together(bug, closed)
    assert not isinstance(caught.value, ChunkswarmError)
    assert {id(leaf) for leaf in leaves(caught.value)} == {id(bug), id(closed)}


async def test_cancellation_passes_through() -> None:
    with trio.move_on_after(0.01) as scope:
        async with open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            nursery.start_soon(trio.sleep_forever)
    assert scope.cancelled_caught


def test_describe_says_each_distinct_error_once() -> None:
    group = TaskErrors.of([StorageError("disk full"), StorageError("disk full"), ConnectionClosed("")])
    assert describe(group) == str(group) == "disk full (2 times); ConnectionClosed"
    assert describe(PeerTimeout("late")) == "late"
