"""The tracker's BitTorrent swarms as the native protocol lists them (capability ``bittorrent``, PROTOCOL.md §8.12).

LIST_TORRENTS, answered by TORRENT_LIST: one entry per BitTorrent swarm the
tracker serves over HTTP or UDP announce (info-hash, seeders, leechers,
completed downloads). Kept apart from :mod:`common.messages`, which
re-exports it.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from common.fields import Record, as_tuple, at_least, bytes_of, int_in, to_tuple, tuple_of, u32
from common.framing import Opcode

__all__ = ["ListTorrents", "TorrentEntry", "TorrentList", "MAX_TORRENTS_LISTED", "INFO_HASH_SIZE"]

#: The most swarms one TORRENT_LIST holds (an entry is at most 37 bytes: ~37 KB).
MAX_TORRENTS_LISTED: Final = 1000
#: A BitTorrent info-hash (v1): the SHA-1 of the torrent's info dictionary.
INFO_HASH_SIZE: Final = 20


@attrs.frozen
class ListTorrents(Record):
    """->T: the BitTorrent swarms, most peers first, at most ``limit``."""

    OPCODE: ClassVar[Opcode] = Opcode.LIST_TORRENTS
    limit: int = attrs.field(default=100, validator=int_in(1, MAX_TORRENTS_LISTED))


@attrs.frozen
class TorrentEntry(Record):
    """One BitTorrent swarm in TORRENT_LIST: its counts as a scrape gives them (BEP 48)."""

    info_hash: bytes = attrs.field(validator=bytes_of(INFO_HASH_SIZE))
    seeders: int = attrs.field(validator=u32)
    leechers: int = attrs.field(validator=u32)
    completed: int = attrs.field(validator=u32)


@attrs.frozen
class TorrentList:
    """T->: the swarms LIST_TORRENTS asked for, and how many more the tracker has (``more``)."""

    OPCODE: ClassVar[Opcode] = Opcode.TORRENT_LIST
    entries: tuple[TorrentEntry, ...] = attrs.field(converter=to_tuple, validator=tuple_of(TorrentEntry, MAX_TORRENTS_LISTED))
    more: int = attrs.field(default=0, validator=u32)

    def to_fields(self) -> list[Any]:
        return [[entry.to_fields() for entry in self.entries], self.more]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> TorrentList:
        entries, more = at_least(cls, fields, 2)
        return cls(tuple(TorrentEntry.from_fields(as_tuple(entry)) for entry in as_tuple(entries)), more)
