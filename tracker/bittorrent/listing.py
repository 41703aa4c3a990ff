"""LIST_TORRENTS (capability ``bittorrent``, PROTOCOL.md §8.12): the BitTorrent swarms, over the native protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from common.torrent_messages import ListTorrents, TorrentEntry, TorrentList

if TYPE_CHECKING:
    from tracker.connection import Connection

__all__ = ["list_torrents"]


async def list_torrents(connection: Connection, request: ListTorrents) -> bytes:
    """The swarms with the most peers first: O(swarms x log limit), so in the connection's task, after a checkpoint."""
    await trio.lowlevel.checkpoint()
    swarms = connection.service.bittorrent.swarms
    entries = [TorrentEntry(s.info_hash, s.seeders, s.leechers, s.downloaded) for s in swarms.summaries(request.limit)]
    return connection.codec.send(TorrentList(entries, more=swarms.torrent_count - len(entries)))
