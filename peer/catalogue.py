"""The tracker's catalogue as a peer sees it: a query-only session, and which file a name or id prefix means.

A tracker that speaks ``lookup`` (PROTOCOL.md §8.9) resolves a name or an id
prefix itself, however large its catalogue; an older one is asked for its
listing, which is what :func:`resolve_entry` then searches either way.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import attrs

from common.capabilities import COLLECTIONS, LOOKUP, UNPUBLISH
from common.errors import AmbiguousFile, TrackerError, UnknownFile
from common.lookup_messages import MAX_LOOKUP
from common.manifest import MAX_NAME_BYTES
from common.messages import FileEntry, FileList, Hello, ListFiles, Lookup, Ok, Stats, StatsReply, Unpublish
from common.version import __version__
from common.wording import format_size, plural
from peer.config import PeerConfig
from peer.secure import CAPABILITIES, Private
from peer.tracker_client import TrackerLink, open_query_link

__all__ = ["Catalogue", "open_catalogue", "list_request", "lookup_request", "resolve_entry", "agent", "LIST_LIMIT"]

_HEX = frozenset(string.hexdigits)


def agent(config: PeerConfig) -> str:
    """What a peer says it is in HELLO: its label, or the software."""
    return (config.label or f"chunkswarm/{__version__}")[:64]


#: The most files a listing asks for (what ``ls`` shows unless told otherwise is fewer).
LIST_LIMIT = 100_000


def list_request(pattern: str, limit: int = LIST_LIMIT) -> ListFiles:
    return ListFiles(pattern, limit=limit)


def lookup_request(query: str) -> Lookup | None:
    """The LOOKUP that resolves ``query`` (PROTOCOL.md §8.9); None when it can name no file (empty, or longer than any name).

    It asks for as many files as a look-up may hold: a name several files
    share is resolved among all of them (:func:`resolve_entry`) unless a
    thousand share it.
    """
    query = query.strip()
    if not query or len(query) > MAX_NAME_BYTES:
        return None
    return Lookup(query, MAX_LOOKUP)


@attrs.define(eq=False)
class Catalogue:
    """A query-only tracker session; create it with :func:`open_catalogue`."""

    link: TrackerLink
    timeout: float

    async def list_files(self, pattern: str = "") -> list[FileEntry]:
        return list((await self.listing(pattern)).entries)

    async def listing(self, pattern: str = "", limit: int = LIST_LIMIT) -> FileList:
        """The files whose name contains ``pattern``, newest first; ``more`` says how many were left out (if the tracker speaks ``lookup``)."""
        return await self.link.request(list_request(pattern, limit), FileList, timeout=self.timeout)

    @property
    def counts_the_rest(self) -> bool:
        """Whether the tracker says how many files a listing left out (PROTOCOL.md §8.9)."""
        return self.link.speaks(LOOKUP)

    async def unpublish(self, file_id: bytes) -> None:
        """Take a file this node published out of the catalogue (PROTOCOL.md §8.7); :class:`TrackerError` if refused."""
        if not self.link.speaks(UNPUBLISH) or self.link.agreement.remote_node is None:
            raise TrackerError("this tracker cannot unpublish files (it speaks no unpublish or identity); files leave it by retention only")
        await self.link.request(Unpublish(file_id), Ok, timeout=self.timeout)

    async def stats(self) -> dict[str, int | float]:
        """The tracker's counters: peers, files, replicas, connections, requests served, uptime."""
        reply = await self.link.request(Stats(), StatsReply, timeout=self.timeout)
        return reply.as_dict()


@asynccontextmanager
async def open_catalogue(config: PeerConfig) -> AsyncIterator[Catalogue]:
    """Browse the tracker without joining the swarm: HELLO with listen_port 0, never REGISTER.

    Such a client serves nothing, so it must not appear in the tracker's peer list.
    """
    hello = Hello(config.node_key.peer_id, listen_port=0, agent=agent(config), capabilities={UNPUBLISH: 1, LOOKUP: 1, COLLECTIONS: 1})
    private = None
    if config.swarm is not None:  # the capability a member requires (PROTOCOL.md §8.8)
        private = Private.create(config.swarm, config.node_key)
        hello = attrs.evolve(hello, capabilities={**dict(hello.capabilities), **CAPABILITIES})
    async with open_query_link(config.tracker, hello, timeout=config.tracker_timeout, key=config.node_key, private=private) as link:
        yield Catalogue(link, config.tracker_timeout)


def resolve_entry(query: str, entries: list[FileEntry]) -> FileEntry:
    """The file of ``entries`` (a listing, newest first) that ``query`` names: a file id or id prefix (hex), or an exact name.

    Several files may share a name (the same content published with
    another chunk size, or another content): the one with live holders is
    meant, complete copies first (:func:`_live_one`); the name is
    ambiguous only when more than one has them. An id prefix of several
    files is ambiguous whatever their holders.
    """
    query = query.strip()
    if not query:
        raise UnknownFile("no file given")
    prefix = query.lower()
    hexadecimal = set(prefix) <= _HEX
    matches = [e for e in entries if e.name == query or (hexadecimal and e.file_id.hex().startswith(prefix))]
    if not matches:
        raise UnknownFile(f"no file named {query!r} or with an id starting with {query!r} on the tracker")
    if len(matches) == 1:
        return matches[0]
    if any(e.name != query for e in matches):
        raise AmbiguousFile(f"{query!r} matches {len(matches)} files: {_describe(matches)}; give a longer id prefix", tuple(matches))
    return _live_one(query, matches)


def _live_one(name: str, entries: list[FileEntry]) -> FileEntry:
    """Of several files named ``name`` (newest first), the one with complete copies, else the one with holders.

    Files without a live holder never make a name ambiguous; when none has
    one, the newest is taken (its download waits for holders like any other).
    """
    for live in ([e for e in entries if e.complete_copies], [e for e in entries if e.holders]):
        if len(live) == 1:
            return live[0]
        if live:
            ranked = sorted((e for e in entries if e.holders), key=lambda e: (-e.complete_copies, -e.holders))
            raise AmbiguousFile(
                f"{name!r} names {len(ranked)} files that peers hold: {_describe(ranked)}; give an id prefix to choose one", tuple(ranked)
            )
    return entries[0]


def _describe(entries: Iterable[FileEntry]) -> str:
    return "; ".join(
        f"{e.name} (id {e.file_id.hex()[:16]}, {plural(e.holders, 'holder')}, {plural(e.complete_copies, 'complete copy', 'complete copies')}, "
        f"{format_size(e.size)})"
        for e in entries
    )


