"""Telling the tracker which files this peer no longer serves (capability ``withdraw``, PROTOCOL.md §8.5).

A held file stops being served when it changes on disk (noticed when one of
its chunks is asked for, or by :meth:`Withdrawals.sweep`, a ``stat`` of every
verified file every ``check_interval``), when a download fails or is
cancelled (its part file leaves the library), or when a file leaves the
library otherwise. The library tells :meth:`Withdrawals.note`, and
:meth:`Withdrawals.run` sends WITHDRAW at once on a tracker link that agreed
on ``withdraw``; a tracker of protocol 1 cannot be told (it lists the file
until this peer leaves or times out).

Withdrawals outlive a lost link: the tracker keeps a registration over a
reconnection whose REGISTER comes before it has seen the old connection go,
so the peer's ``on_connected`` sends those still due (:meth:`take`) with its
announcements. A file served again by then is not withdrawn.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence

import attrs
import trio

from common.capabilities import WITHDRAW
from common.chunkset import Ranges
from common.errors import ChunkswarmError
from common.messages import Announce, Error, Message, Withdraw
from peer.storage.library import HeldFile, Library, changed_files
from peer.tracker_client import TrackerClient

__all__ = ["Withdrawals"]

logger = logging.getLogger(__name__)


def _every_chunk(count: int) -> Ranges:
    # For a file without chunks, [] withdraws the replica (PROTOCOL.md §8.5).
    return ((0, count),) if count else ()


@attrs.define(eq=False)
class Withdrawals:
    """The files ``library`` stopped serving, until ``tracker`` has been told; see the module docstring."""

    library: Library
    tracker: TrackerClient
    #: Seconds between two sweeps of the verified files for changes on disk.
    check_interval: float = 1.0
    #: File id -> chunk count, of the files to withdraw.
    _due: dict[bytes, int] = attrs.field(init=False, factory=dict)
    _wakeup: trio.Event = attrs.field(init=False, factory=trio.Event)

    def note(self, held: HeldFile) -> None:
        """The library's ``on_withdraw``: ``held`` is no longer served."""
        self._due[held.manifest.file_id] = held.manifest.chunk_count
        self._wakeup.set()

    def take(self) -> list[Message]:
        """The WITHDRAWs due, for a link that speaks ``withdraw``; they are then no longer due."""
        return [Withdraw(file_id, _every_chunk(count)) for file_id, count in self._take().items()]

    def _take(self) -> dict[bytes, int]:
        due, self._due = self._due, {}
        return {file_id: count for file_id, count in due.items() if not self.library.serves(file_id)}

    def forget(self) -> None:
        """The link does not speak ``withdraw``: nothing can be withdrawn on it."""
        self._due.clear()

    async def run(self) -> None:
        """Send the withdrawals as they come, for as long as the peer runs."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self._send()

    async def _send(self) -> None:
        tracker = self.tracker
        if not tracker.connected:
            return  # the reconnection sends them (``take``, from the peer's on_connected)
        if not tracker.speaks(WITHDRAW):
            self.forget()
            return
        due = self._take()
        if not due:
            return
        try:
            replies = await tracker.request_many([Withdraw(file_id, _every_chunk(count)) for file_id, count in due.items()])
        except ChunkswarmError as exc:
            logger.debug("withdrawing from the tracker failed (%s): again after the reconnection", exc)
            self._due = {**due, **self._due}
            return
        for reply in replies:
            if isinstance(reply, Error):  # the tracker forgot the file, say: nothing listed to withdraw
                logger.debug("WITHDRAW refused: %s %s", reply.code_name, reply.message)
        await self._announce_again(due)

    async def _announce_again(self, withdrawn: dict[bytes, int]) -> None:
        """Files served again while their WITHDRAW was on its way (a download resumed at once) are announced again."""
        again: list[Message] = []
        for file_id in withdrawn:
            held = self.library.get(file_id)
            if held is not None and not held.withdrawn and (held.have.mask or not held.manifest.chunk_count):
                again.append(Announce(file_id, held.have.ranges()))
        if again:
            try:
                await self.tracker.request_many(again)
            except ChunkswarmError as exc:
                logger.debug("announcing again failed (%s): the reconnection announces everything held", exc)

    async def sweep(self) -> None:
        """Every ``check_interval``, withdraw the verified files that changed on disk, asked for or not."""
        library = self.library
        while True:
            await trio.sleep(self.check_interval)
            watched = [held for held in library.files.values() if held.signature is not None and not held.withdrawn]
            if not watched:
                continue
            withdrawn = []
            for held in await trio.to_thread.run_sync(changed_files, watched):
                if library.get(held.manifest.file_id) is held:  # not replaced meanwhile
                    withdrawn.append(held.path)
                    held.withdraw()
            _tell_changed(withdrawn)


#: Files named one line each when a sweep finds this many changed at most; one line for all above it.
_NAMED = 3


def _tell_changed(paths: Sequence[pathlib.Path]) -> None:
    """One warning per file changed on disk, or one for all of a sweep's when there are many.

    A synced folder's user deleting 1,000 files is not 1,000 events worth a line each (nor the
    milliseconds of writing them).
    """
    if len(paths) <= _NAMED:
        for path in paths:
            logger.warning("%s changed on disk: no longer serving it", path)
    else:
        names = ", ".join(str(path) for path in paths[:_NAMED])
        logger.warning("%d files changed on disk: no longer serving them (%s and %d more)", len(paths), names, len(paths) - _NAMED)
