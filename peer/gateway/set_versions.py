"""The versions of a set (a collection, PROTOCOL.md §8.11) the gateway serves, each checked as a peer checks them.

The current version is fetched from the tracker at every request (a watch
would not do: a new version with the same entries, another owner say, has the
same root) and checked step by step from the one this gateway checked last
(:func:`peer.collections.fetch_following`): a version signed by a key no owner
allowed, a gap or a fork is never served. An older version (``?sequence=`` or
``?root=``) is checked backwards from the current one: each version must be the
parent of the next (:func:`common.collection.check_successor`), at most
:data:`MAX_BACK` versions back.
"""

from __future__ import annotations

from typing import Final

import attrs

from common.collection import CollectionVersion, check_successor
from common.collection_messages import CollectionReply, GetCollection
from common.errors import IntegrityError, UnknownFile
from common.framing import ErrorCode
from common.messages import Error
from peer.collections import fetch_following
from peer.node import Peer
from peer.tracker_client import check_reply

__all__ = ["UnknownSet", "SetVersions", "MAX_BACK"]

#: How many versions back ``?sequence=`` and ``?root=`` may reach.
MAX_BACK: Final = 256
#: Versions asked for in one pipelined write while walking back.
_BATCH: Final = 16
#: Sets whose last checked version is kept (the oldest is dropped past this).
_KEPT_SETS: Final = 64


class UnknownSet(UnknownFile):
    """No such set, version or entry (404)."""


@attrs.define(eq=False)
class SetVersions:
    """The gateway's view of sets: the current version of each, checked; older ones on request."""

    peer: Peer
    _kept: dict[str, CollectionVersion] = attrs.field(init=False, factory=dict)

    async def current(self, name: str, *, missing_ok: bool = False) -> CollectionVersion | None:
        """The current version of ``name``, checked from the one kept; UnknownSet (None with ``missing_ok``) if there is none."""
        link = await self.peer.tracker.link()  # waits for the connection: before it, the link speaks no collections
        version = await fetch_following(link, name, self._kept.get(name))
        if version is None:
            if missing_ok:
                return None
            raise UnknownSet(f"no set named {name!r} on the tracker")
        self.note(version)
        return version

    def note(self, version: CollectionVersion) -> None:
        """Keep ``version`` as the last checked one of its set (after checking it, or publishing it)."""
        self._kept.pop(version.name, None)
        self._kept[version.name] = version
        while len(self._kept) > _KEPT_SETS:
            del self._kept[next(iter(self._kept))]

    async def version(self, name: str, sequence: int | None = None, root: bytes | None = None) -> CollectionVersion:
        """The version of ``name`` with ``sequence`` or ``root`` (neither: the current one), checked back from the current one."""
        current = await self.current(name)
        assert current is not None
        if (sequence is None or sequence == current.sequence) and (root is None or root == current.root):
            return current
        if sequence is not None and sequence > current.sequence:
            raise UnknownSet(f"set {name!r} has no version {sequence} (its current version is {current.sequence})")
        wanted = f"version {sequence}" if sequence is not None else f"a version with root {root.hex() if root else ''}"
        lowest = max(1, current.sequence - MAX_BACK)
        if sequence is not None and sequence < lowest:
            raise UnknownSet(f"set {name!r}: version {sequence} is more than {MAX_BACK} versions behind the current one ({current.sequence})")
        later = current
        while later.sequence > lowest:
            numbers = range(later.sequence - 1, max(lowest, later.sequence - _BATCH) - 1, -1)
            replies = await (await self.peer.tracker.link()).request_many([GetCollection(name, n) for n in numbers],
                                                                          timeout=self.peer.config.tracker_timeout)
            for number, reply in zip(numbers, replies, strict=True):
                if isinstance(reply, Error) and reply.code in (ErrorCode.UNKNOWN_COLLECTION, ErrorCode.VERSION_PRUNED):
                    raise UnknownSet(f"set {name!r}: the tracker does not keep version {number} any more (looking for {wanted})")
                older = check_reply(reply, CollectionReply).version
                if older is None or older.name != name or older.sequence != number:
                    raise IntegrityError(f"set {name!r}: asked the tracker for version {number}, it sent another")
                check_successor(older, later)  # the parent of the version checked before it
                if (sequence is None or sequence == number) and (root is None or root == older.root):
                    return older
                later = older
        raise UnknownSet(f"set {name!r} has no {wanted} among its last {MAX_BACK} versions")
