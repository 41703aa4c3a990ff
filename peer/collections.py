"""A peer's side of collections (capability ``collections``, PROTOCOL.md §8.10): fetch, publish, watch, and check versions.

``link`` is what ``peer.tracker_client`` gives a node for its requests: a
:class:`~peer.tracker_client.TrackerLink` (one connection, with a timeout per
request) or a :class:`~peer.tracker_client.TrackerClient` (the node's link kept
up). Replies come in order, so a watch holds back every later request on its
link for up to its timeout: watch on a link of its own (``open_query_link``).

Peers apply the tracker's rule to what they receive: :func:`fetch_following`
walks the versions from one the client kept (or from the first) to the
current one, checking each step with :func:`common.collection.check_successor`,
so a version signed by anyone but an owner is refused here too, whatever the
tracker says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from common.capabilities import COLLECTIONS
from common.collection import CollectionVersion, check_signature, check_successor
from common.collection_messages import MAX_WATCH, CollectionReply, GetCollection, PublishCollection, WatchCollection
from common.errors import CollectionConflict, IntegrityError, NotAnOwner, TrackerError
from common.framing import ErrorCode
from common.messages import Error, Message, Ok
from peer.tracker_client import TrackerClient, TrackerLink, check_reply

__all__ = [
    "fetch_collection",
    "fetch_version",
    "fetch_following",
    "publish_collection",
    "watch_collection",
    "collection_request",
    "check_publish_reply",
    "DEFAULT_TIMEOUT",
]

DEFAULT_TIMEOUT: Final = 30.0
#: Versions asked for in one pipelined write while walking a chain.
_CHAIN_BATCH: Final = 16

Link = TrackerLink | TrackerClient


def _check_link(link: Link) -> None:
    if not link.speaks(COLLECTIONS):
        raise TrackerError("the tracker does not keep collections (it speaks no collections, PROTOCOL.md §8.10)")


async def _ask(link: Link, messages: Sequence[Message], timeout: float) -> list[Message]:
    _check_link(link)
    if isinstance(link, TrackerLink):
        return await link.request_many(messages, timeout=timeout)
    return await link.request_many(messages)


def _version_of(reply: Message, name: str) -> CollectionVersion | None:
    if isinstance(reply, Error) and reply.code == ErrorCode.UNKNOWN_COLLECTION:
        return None
    version = check_reply(reply, CollectionReply).version
    if version is not None and version.name != name:
        raise IntegrityError(f"asked for collection {name!r}, the tracker sent {version.name!r}")
    return version


async def fetch_version(link: Link, name: str, sequence: int = 0, *, timeout: float = DEFAULT_TIMEOUT) -> CollectionVersion | None:
    """Version ``sequence`` (0: the current one) of ``name`` as the tracker has it, unchecked; None if unknown."""
    (reply,) = await _ask(link, [GetCollection(name, sequence)], timeout)
    version = _version_of(reply, name)
    if version is not None and sequence and version.sequence != sequence:
        raise IntegrityError(f"asked for version {sequence} of {name!r}, the tracker sent version {version.sequence}")
    return version


async def fetch_collection(link: Link, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> CollectionVersion | None:
    """The current version of collection ``name``, its signature checked (signer among its owners); None if unknown.

    Who may sign depends on the versions before: :func:`fetch_following` checks the chain.
    """
    version = await fetch_version(link, name, timeout=timeout)
    if version is not None:
        check_signature(version)
        if version.signer not in version.owners and version.sequence == 1:
            raise NotAnOwner(f"collection {name!r}: its first version is signed by a key that is not an owner")
    return version


async def fetch_following(
    link: Link, name: str, kept: CollectionVersion | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> CollectionVersion | None:
    """The current version of ``name``, checked step by step from ``kept`` (None: from the first version).

    Raises :class:`~common.errors.NotAnOwner` or :class:`~common.errors.NotASuccessor`
    when a step does not follow (a version signed by a key no owner allowed, a
    gap or a fork), :class:`IntegrityError` when the current version is older
    than ``kept``. None if the tracker knows no such collection.
    """
    current = await fetch_version(link, name, timeout=timeout)
    if current is None:
        return None
    if kept is not None:
        if current.sequence < kept.sequence or (current.sequence == kept.sequence and current.root != kept.root):
            raise IntegrityError(
                f"collection {name!r}: the tracker's version {current.sequence} (root {current.root.hex()[:16]}) does not follow "
                f"version {kept.sequence} (root {kept.root.hex()[:16]}) kept here"
            )
        if current.sequence == kept.sequence:
            if current != kept:
                raise IntegrityError(f"collection {name!r}: the tracker's version {current.sequence} is not the one kept here (a fork)")
            return kept
    previous = kept
    start = 1 if kept is None else kept.sequence + 1
    for first in range(start, current.sequence, _CHAIN_BATCH):
        numbers = range(first, min(first + _CHAIN_BATCH, current.sequence))
        replies = await _ask(link, [GetCollection(name, n) for n in numbers], timeout)
        for number, reply in zip(numbers, replies, strict=True):
            version = _version_of(reply, name)
            if version is None or version.sequence != number:
                raise IntegrityError(f"collection {name!r}: the tracker does not have version {number} any more")
            check_successor(previous, version)
            previous = version
    if previous is not current:
        check_successor(previous, current)
    return current


def collection_request(version: CollectionVersion) -> PublishCollection:
    """The PUBLISH_COLLECTION of ``version`` (for a pipelined batch after its files' PUBLISH frames)."""
    return PublishCollection(version)


def check_publish_reply(reply: Message, version: CollectionVersion) -> None:
    """OK, else the error: :class:`CollectionConflict` (with the current sequence) for a version that came too late."""
    if isinstance(reply, Error) and reply.code == ErrorCode.COLLECTION_CONFLICT:
        raise CollectionConflict(f"tracker error COLLECTION_CONFLICT: {reply.message}", _sequence_in(reply.message, version),
                                 code=reply.code)  # fmt: skip
    check_reply(reply, Ok)


def _sequence_in(message: str, version: CollectionVersion) -> int:
    # The tracker says "collection 'NAME' is at version N: ..." (tracker/collections.py); a tracker
    # that says it otherwise still conflicts, and then the sequence before ours is the best guess.
    marker = " is at version "
    at = message.find(marker)
    if at >= 0:
        digits = message[at + len(marker) :].split(":", 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return version.sequence - 1


async def publish_collection(link: Link, version: CollectionVersion, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make ``version`` current on the tracker; :class:`CollectionConflict` if its parent is stale, TrackerError otherwise."""
    (reply,) = await _ask(link, [collection_request(version)], timeout)
    check_publish_reply(reply, version)


async def watch_collection(
    link: Link, name: str, known_root: bytes, *, timeout: float = MAX_WATCH
) -> CollectionVersion | None:
    """The current version as soon as its root differs from ``known_root`` (b"": none known); None if none came within ``timeout``.

    The tracker waits at most 25 s (PROTOCOL.md §8.10): call again to watch longer.
    The version's signature is checked; check the chain with :func:`common.collection.check_successor`.
    """
    wait = min(timeout, MAX_WATCH)
    if isinstance(link, TrackerClient):
        wait = min(wait, link.timeout / 2)  # the client's own timeout bounds every request on it
    (reply,) = await _ask(link, [WatchCollection(name, known_root, wait)], wait + DEFAULT_TIMEOUT)
    version = _version_of(reply, name)
    if version is not None:
        check_signature(version)
    return version
