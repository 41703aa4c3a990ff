"""A peer's side of collections (capability ``collections``, PROTOCOL.md §8.11): fetch, publish, watch, and check versions.

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

import logging
from collections.abc import Sequence
from typing import Final

import attrs

from common.capabilities import COLLECTIONS
from common.collection import CollectionVersion, check_signature, check_successor
from common.collection_messages import MAX_WATCH, CollectionReply, GetCollection, PublishCollection, WatchCollection
from common.errors import CollectionConflict, IntegrityError, NotAnOwner, TrackerError
from common.framing import ErrorCode
from common.identity import node_id, short_id
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

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 30.0
#: Versions asked for in one pipelined write while walking a chain.
_CHAIN_BATCH: Final = 16

Link = TrackerLink | TrackerClient


def _check_link(link: Link) -> None:
    if not link.speaks(COLLECTIONS):
        raise TrackerError("the tracker does not keep collections (it speaks no collections, PROTOCOL.md §8.11)")


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

    Where the tracker pruned the versions after the last one checked (``ERROR
    VERSION_PRUNED``, PROTOCOL.md §8.11), the walk goes on from the first version
    kept there that is signed by an owner of the last one checked (for a client
    that kept nothing: by one of its own owners, as a first version is), and says
    so in the log; a chain that never comes back to such an owner is refused
    (:class:`~common.errors.NotAnOwner`), never taken unchecked.
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
    chain = _Chain(name, kept)
    number = 1 if kept is None else kept.sequence + 1
    while number < current.sequence:
        numbers = range(number, min(number + _CHAIN_BATCH, current.sequence))
        replies = await _ask(link, [GetCollection(name, n) for n in numbers], timeout)
        number = numbers.stop
        for asked, reply in zip(numbers, replies, strict=True):
            if isinstance(reply, Error) and reply.code == ErrorCode.VERSION_PRUNED:
                # No number given (nor worded as expected): the current version is the only one known to be kept.
                number = chain.pruned(asked, _named_sequence(reply, " keeps versions from ", " ", current.sequence))
                break
            version = _version_of(reply, name)
            if version is None or version.sequence != asked:
                raise IntegrityError(f"collection {name!r}: the tracker does not have version {asked} any more")
            chain.step(version)
    chain.step(current)
    if chain.gap is not None:
        raise NotAnOwner(f"collection {name!r}: versions {chain.gap[0]} to {chain.gap[1]} were pruned on the tracker, and no "
                         f"version since is signed by {chain.trusted_by()}: the current version cannot be checked")  # fmt: skip
    return current


@attrs.define(eq=False)
class _Chain:
    """The walk of :func:`fetch_following`: each version checked against the one before, or, after pruned ones, by its signer."""

    name: str
    previous: CollectionVersion | None
    #: The versions pruned (first, last) while no version after them is trusted yet; None: the chain is whole.
    gap: tuple[int, int] | None = None

    def pruned(self, asked: int, oldest: int) -> int:
        """Version ``asked`` is pruned, ``oldest`` is the oldest kept: where the walk goes on."""
        if oldest <= asked:
            raise IntegrityError(f"collection {self.name!r}: the tracker pruned version {asked} but names {oldest} as the oldest kept")
        self.gap = (asked if self.gap is None else self.gap[0], oldest - 1)
        return oldest

    def trusted_by(self) -> str:
        if self.previous is None:
            return "one of its own owners"
        return f"an owner of version {self.previous.sequence}, the last one checked here"

    def step(self, version: CollectionVersion) -> None:
        if self.gap is None:
            check_successor(self.previous, version)
            self.previous = version
            return
        check_signature(version)
        owners = version.owners if self.previous is None else self.previous.owners
        if version.signer not in owners:
            return  # not trusted by itself: one signed by a trusted owner later on vouches for what follows it
        logger.warning("collection %r: versions %d to %d were pruned on the tracker; version %d is signed by %s (%s): "
                       "checked from it on", self.name, *self.gap, version.sequence, short_id(node_id(version.signer)),
                       self.trusted_by())  # fmt: skip
        self.gap = None
        self.previous = version


def _named_sequence(reply: Error, marker: str, end: str, default: int) -> int:
    """The version a refusal names: its ``sequence`` field (PROTOCOL.md §8.11); else, from a tracker that does not send it, read in its message.

    Such a tracker writes "collection 'NAME' keeps versions from N on: ..." and "collection 'NAME' is at version N: ..."
    (the number after ``marker``, up to ``end``); worded otherwise, it still refused, and the caller's guess
    ``default`` stands.
    """
    if reply.sequence:
        return reply.sequence
    message = reply.message
    at = message.find(marker)
    if at >= 0:
        digits = message[at + len(marker) :].split(end, 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return default


def collection_request(version: CollectionVersion) -> PublishCollection:
    """The PUBLISH_COLLECTION of ``version`` (for a pipelined batch after its files' PUBLISH frames)."""
    return PublishCollection(version)


def check_publish_reply(reply: Message, version: CollectionVersion) -> None:
    """OK, else the error: :class:`CollectionConflict` (with the current sequence) for a version that came too late."""
    if isinstance(reply, Error) and reply.code == ErrorCode.COLLECTION_CONFLICT:  # (worded otherwise: the one before ours)
        raise CollectionConflict(f"tracker error COLLECTION_CONFLICT: {reply.message}", _named_sequence(reply, " is at version ", ":", version.sequence - 1),
                                 code=reply.code)  # fmt: skip
    check_reply(reply, Ok)


async def publish_collection(link: Link, version: CollectionVersion, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Make ``version`` current on the tracker; :class:`CollectionConflict` if its parent is stale, TrackerError otherwise."""
    (reply,) = await _ask(link, [collection_request(version)], timeout)
    check_publish_reply(reply, version)


async def watch_collection(
    link: Link, name: str, known_root: bytes, *, timeout: float = MAX_WATCH
) -> CollectionVersion | None:
    """The current version as soon as its root differs from ``known_root`` (b"": none known); None if none came within ``timeout``.

    The tracker waits at most 25 s (PROTOCOL.md §8.11): call again to watch longer.
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
