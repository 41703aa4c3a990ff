"""The tracker's BitTorrent swarms in its web UI and JSON API: real announces over HTTP, read back over HTTP."""

from __future__ import annotations

from urllib.parse import quote_from_bytes

import bencode2
import httpx
import pytest
import trio

from tracker.bittorrent.settings import BitTorrentConfig
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

TIMEOUT = 20
BUSY = bytes(range(20))
QUIET = bytes(range(100, 120))


async def start(nursery: trio.Nursery, bittorrent: BitTorrentConfig | None = None) -> RunningTracker:
    config = TrackerConfig(port=0, http_host="127.0.0.1", bittorrent=bittorrent or BitTorrentConfig())
    running: RunningTracker = await nursery.start(serve_tracker, config)
    return running


async def announce(http: httpx.AsyncClient, url: str, info_hash: bytes, peer: int, left: int, extra: str = "") -> None:
    peer_id = b"-TEST00-%012d" % peer
    query = f"info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={quote_from_bytes(peer_id, safe='')}&port={6881 + peer}&left={left}&compact=1{extra}"
    reply = await http.get(f"{url}/announce?{query}")
    assert reply.status_code == 200 and b"failure reason" not in bencode2.bdecode(reply.content)


async def test_announced_swarms_are_listed_by_the_api_and_the_stats_panel(nursery: trio.Nursery) -> None:
    running = await start(nursery, BitTorrentConfig(http=("127.0.0.1", 0)))
    assert running.bittorrent.http is not None and running.http_url is not None
    announce_url = f"http://127.0.0.1:{running.bittorrent.http[1]}"
    with trio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            await announce(http, announce_url, BUSY, 1, left=0, extra="&event=completed")  # a seeder that downloaded here
            await announce(http, announce_url, BUSY, 2, left=1000)
            await announce(http, announce_url, QUIET, 3, left=1000)
            web = running.http_url.rstrip("/")
            listed = (await http.get(f"{web}/api/v1/torrents")).json()
            second = (await http.get(f"{web}/api/v1/torrents", params={"offset": "1", "limit": "1"})).json()
            stats = (await http.get(f"{web}/api/v1/stats")).json()
            panel = (await http.get(f"{web}/stats/panel")).text
            bad = await http.get(f"{web}/api/v1/torrents", params={"limit": "0"})
    assert listed["total"] == 2
    assert listed["torrents"] == [  # most peers first, as LIST_TORRENTS
        {"info_hash": BUSY.hex(), "seeders": 1, "leechers": 1, "completed": 1},
        {"info_hash": QUIET.hex(), "seeders": 0, "leechers": 1, "completed": 0},
    ]
    assert [t["info_hash"] for t in second["torrents"]] == [QUIET.hex()] and second["total"] == 2
    assert stats["bittorrent"] == {"torrents": 2, "peers": 3, "seeders": 1, "leechers": 2, "announces": 3, "scrapes": 0}
    assert "BitTorrent swarms" in panel and BUSY.hex() in panel and QUIET.hex() in panel
    assert bad.status_code == 400 and "limit must be from 1 to 1000" in bad.json()["error"]


@pytest.mark.parametrize("path", ["/stats/panel", "/stats"])
async def test_with_bittorrent_off_there_are_no_swarms_to_show(nursery: trio.Nursery, path: str) -> None:
    running = await start(nursery)
    assert running.http_url is not None
    async with httpx.AsyncClient(base_url=running.http_url, timeout=TIMEOUT) as http:
        listed = (await http.get("/api/v1/torrents")).json()
        stats = (await http.get("/api/v1/stats")).json()
        page = (await http.get(path)).text
    assert listed == {"offset": 0, "limit": 50, "total": 0, "torrents": []}
    assert stats["bittorrent"] is None
    assert "BitTorrent" not in page
