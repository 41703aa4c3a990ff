"""What a download tells the app: progress as it goes (:class:`ProgressSink`), a summary when done (:class:`DownloadResult`).

The engine only calls a sink; the app's ``chunkswarm/ui.py`` draws it (rich
stays at the edge).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Protocol

import attrs

from common.manifest import Manifest
from common.wording import plural
from peer.status import TransferCount

__all__ = ["ProgressSink", "DownloadResult", "completion_notes"]


class ProgressSink(Protocol):
    """What the engine tells a progress display (``chunkswarm/ui.py``).

    ``started``, ``chunk`` (``source_label`` is ``label (host:port)``) and
    ``finished`` are required; ``peers`` (the number of peers connected) is
    called only if the sink has it. ``hashing`` (bytes of ``name`` hashed so
    far, while a file is published) is optional too: a sink without it gets
    ``started`` and ``finished`` once the file is hashed.
    """

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None: ...

    def chunk(self, index: int, nbytes: int, source_label: str) -> None: ...

    def peers(self, count: int) -> None: ...

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None: ...

    def finished(self) -> None: ...


@attrs.frozen
class DownloadResult:
    """What :meth:`peer.node.Peer.download` did."""

    path: pathlib.Path
    manifest: Manifest
    #: Chunks and bytes received per source peer, named ``label (host:port)``.
    received: dict[str, TransferCount]
    chunks_received: int
    chunks_resumed: int
    #: Chunks requested again after a bad chunk, a dead peer or a refusal.
    chunks_refetched: int
    #: Chunks whose data failed verification (never written).
    bad_chunks: int
    seconds: float
    #: The file was already in place; nothing was transferred.
    already_complete: bool = False

    @property
    def bytes_received(self) -> int:
        return sum(c.bytes for c in self.received.values())


def completion_notes(duplicates: int, surplus: int, refetched: int, bad: int, chunk_count: int) -> list[tuple[int, str]]:
    """What a finished download says about the chunks it did not simply receive once: (log level, sentence).

    Near the end the last chunks are asked of two peers (``duplicates``
    requests); a copy that came anyway after the first (``surplus``) is the
    normal price of a fast finish, worth an INFO line only when it is a good
    part of the file. Chunks asked again were logged as their peer failed
    (DEBUG); bad chunks always are worth a line.
    """
    notes = []
    if duplicates:
        notes.append((logging.DEBUG, f"{plural(duplicates, 'request')} near the end went to a second peer"))
    if surplus:
        level = logging.INFO if 4 * surplus >= chunk_count else logging.DEBUG
        notes.append((level, f"{plural(surplus, 'chunk was', 'chunks were')} received twice near the end "
                             "(normal: the last chunks are asked of two peers)"))  # fmt: skip
    if refetched:
        notes.append((logging.DEBUG, f"{plural(refetched, 'chunk was', 'chunks were')} asked of another peer "
                                     "(a peer was busy, went away or sent bad data)"))  # fmt: skip
    if bad:
        notes.append((logging.INFO, f"{plural(bad, 'chunk')} failed verification and {'was' if bad == 1 else 'were'} fetched again"))
    return notes
