"""The one exception hierarchy of chunkswarm.

Every error the project raises on purpose derives from :class:`ChunkswarmError`,
so callers can catch "anything chunkswarm complains about" in one place while
programming errors (``TypeError``, ``AssertionError`` ...) still surface.

``ProtocolError`` is split as in h11 / wsproto: ``LocalProtocolError`` means *we*
tried to break the protocol (a bug on our side), ``RemoteProtocolError`` means the
other side did (close that connection, keep serving the rest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = [
    "ChunkswarmError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ValidationError",
    "IntegrityError",
    "TrackerError",
    "ConnectionClosed",
    "PeerTimeout",
    "StorageError",
    "TrackerUnavailable",
    "UnknownFile",
    "AmbiguousFile",
    "NoHolders",
    "AlreadyDownloading",
    "Refused",
    "Busy",
    "TaskErrors",
    "CollectionRefused",
    "NotAnOwner",
    "NotASuccessor",
    "CollectionConflict",
    "leaves",
    "describe",
]


class ChunkswarmError(Exception):
    """Base class of every error chunkswarm raises deliberately."""


class ValidationError(ChunkswarmError, ValueError):
    """A value does not satisfy the rules of its type (bad hash length, bad name ...)."""


class ProtocolError(ChunkswarmError):
    """The framed protocol was violated.

    ``error_code`` is the :class:`common.messages.ErrorCode` value a server
    sends back before closing, when it can.
    """

    def __init__(self, reason: str, *, error_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_code = error_code


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The remote side sent something the protocol forbids."""


class IntegrityError(ChunkswarmError):
    """Data does not match its hash: a corrupt chunk, manifest or file."""


class TrackerError(ChunkswarmError):
    """The tracker answered a request with an error reply.

    ``code`` is the :class:`common.messages.ErrorCode` it sent; ``sequence``
    the collection version it names (``ERROR.sequence``, PROTOCOL.md §8.11), 0 for none.
    """

    def __init__(self, message: str, *, code: int | None = None, sequence: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.sequence = sequence


class ConnectionClosed(ChunkswarmError):
    """The connection is gone (closed by either side, reset or broken)."""


class PeerTimeout(ChunkswarmError):
    """The remote side did not answer in time."""


class StorageError(ChunkswarmError):
    """Reading or writing local files failed (disk full, not writable, vanished ...)."""


class AlreadyDownloading(StorageError):
    """Another download (this process or another) holds the lock of the same output file."""


class TrackerUnavailable(ChunkswarmError):
    """The tracker cannot be reached (refused, timed out, or gone and not back in time)."""


class UnknownFile(ChunkswarmError):
    """No file on the tracker matches a name or id prefix."""


class AmbiguousFile(ChunkswarmError):
    """Several files match a name or id prefix; ``candidates`` lists them."""

    def __init__(self, message: str, candidates: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates


class NoHolders(ChunkswarmError):
    """Some chunks of a download are held by no reachable peer; ``missing`` lists them."""

    def __init__(self, message: str, missing: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


class Refused(ChunkswarmError):
    """The other side answered HELLO with ERROR, or agreed on less than this side requires.

    ``code`` is the :class:`common.framing.ErrorCode` value (BUSY, TOO_MANY_CONNECTIONS,
    UNSUPPORTED_VERSION, MISSING_CAPABILITY ...); a code this side does not know is
    a generic refusal.
    """

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class Busy(Refused):
    """The other side is at a limit (``BUSY``, ``TOO_MANY_CONNECTIONS``): try later, or elsewhere."""


class CollectionRefused(ValidationError):
    """A collection version may not follow the one before it (common.collection.check_successor)."""


class NotAnOwner(CollectionRefused):
    """A collection version's signature does not verify, or its signer is not one of the owners."""


class NotASuccessor(CollectionRefused):
    """A collection version's sequence or parent does not follow the version it should replace."""


class CollectionConflict(TrackerError):
    """The tracker holds a newer version of the collection than the one a publish followed (a stale parent).

    ``current_sequence`` is the sequence of the version the tracker holds: fetch it and build on it.
    """

    def __init__(self, message: str, current_sequence: int, *, code: int | None = None) -> None:
        super().__init__(message, code=code, sequence=current_sequence)
        self.current_sequence = current_sequence


# ---------------------------------------------------------------------------
# Several errors at once (the tasks of one nursery)
# ---------------------------------------------------------------------------
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
