"""The answers the pages and the API share: each builds the JSON-ready dict of one kind of request."""

from __future__ import annotations

from typing import Any, Final, Literal

import trio
from starlette.requests import Request

from common.address import format_address
from tracker.bittorrent.swarms import SwarmSummary
from tracker.web.params import file_id_param, integer_param, search_params
from tracker.web.queries import HOLDERS_PER_RESULT, MAX_HOLDERS_SHOWN, MAX_OFFSET, Clock, availability, file_json, peer_json, search
from tracker.web.state import WebState

__all__ = ["search_view", "file_view", "peers_view", "stats_view", "torrents_view", "torrents_page_view", "tracker_address", "MAX_PEERS_PAGE"]

#: Peers on one page of /api/v1/peers and of the stats page.
MAX_PEERS_PAGE: Final = 1000
DEFAULT_PEERS_PAGE: Final = 200
#: Searches shown on the stats page and in /api/v1/stats.
RECENT_SEARCHES: Final = 50
#: BitTorrent swarms on one page of /api/v1/torrents; the stats page shows the first :data:`TORRENTS_SHOWN`.
MAX_TORRENTS_PAGE: Final = 1000
DEFAULT_TORRENTS_PAGE: Final = 50
TORRENTS_SHOWN: Final = 50


def tracker_address(state: WebState, request: Request) -> str:
    """The tracker's protocol address as the asker reaches it: the host it used for this page, the protocol port."""
    host = state.service.config.host
    if host in ("", "*", "0.0.0.0", "::"):
        host = request.url.hostname or "127.0.0.1"
    return format_address(host, state.protocol_port)


async def search_view(state: WebState, request: Request, source: Literal["web", "api"]) -> dict[str, Any]:
    params = search_params(request.query_params)
    service = state.service
    records, total = await search(service.registry, state.names, params.query, params.offset, params.limit, state.scans)
    service.searches.record(params.query, total, source)
    clock = Clock(trio.current_time)
    tracker = tracker_address(state, request)
    timeout = service.config.peer_timeout
    files = [file_json(record, clock, timeout, HOLDERS_PER_RESULT, tracker, state.private) for record in records]
    return {"query": params.query, "offset": params.offset, "limit": params.limit, "total": total, "files": files}


async def file_view(state: WebState, request: Request, text_id: str) -> dict[str, Any]:
    """One file with up to :data:`MAX_HOLDERS_SHOWN` holders and its availability picture; 404 (``UNKNOWN_FILE``) if unknown."""
    service = state.service
    record = service.registry.record(file_id_param(text_id))
    clock = Clock(trio.current_time)
    answer = file_json(record, clock, service.config.peer_timeout, MAX_HOLDERS_SHOWN, tracker_address(state, request), state.private)
    answer["availability"] = await availability(record)
    return answer


def peers_view(state: WebState, request: Request) -> dict[str, Any]:
    """The registered peers, most recently heard first, paged."""
    params = request.query_params
    offset = integer_param(params, "offset", 0, 0, 1_000_000)
    limit = integer_param(params, "limit", DEFAULT_PEERS_PAGE, 1, MAX_PEERS_PAGE)
    service = state.service
    peers = service.registry.peers()
    clock = Clock(trio.current_time)
    timeout = service.config.peer_timeout
    chosen = peers[::-1][offset : offset + limit]
    return {"offset": offset, "limit": limit, "total": len(peers), "peers": [peer_json(peer, clock, timeout) for peer in chosen]}


def _torrent_json(summary: SwarmSummary) -> dict[str, Any]:
    return {"info_hash": summary.info_hash.hex(), "seeders": summary.seeders, "leechers": summary.leechers, "completed": summary.downloaded}


def torrents_view(state: WebState, offset: int = 0, limit: int = DEFAULT_TORRENTS_PAGE) -> dict[str, Any]:
    """The tracker's BitTorrent swarms, most peers first (the order of LIST_TORRENTS), paged; none while BitTorrent is off."""
    service = state.service
    if not service.config.bittorrent.enabled:
        return {"offset": offset, "limit": limit, "total": 0, "torrents": []}
    swarms = service.bittorrent.swarms
    chosen = list(swarms.summaries(offset + limit))[offset:]
    return {"offset": offset, "limit": limit, "total": swarms.torrent_count, "torrents": [_torrent_json(s) for s in chosen]}


def torrents_page_view(state: WebState, request: Request) -> dict[str, Any]:
    """/api/v1/torrents: ``offset`` and ``limit`` (at most :data:`MAX_TORRENTS_PAGE`) from the query."""
    params = request.query_params
    offset = integer_param(params, "offset", 0, 0, MAX_OFFSET)
    return torrents_view(state, offset, integer_param(params, "limit", DEFAULT_TORRENTS_PAGE, 1, MAX_TORRENTS_PAGE))


def bittorrent_view(state: WebState) -> dict[str, int] | None:
    """The BitTorrent side's counters, or None while it is off."""
    service = state.service
    if not service.config.bittorrent.enabled:
        return None
    counts = service.bittorrent.swarms.counts()
    peers, seeders = counts["bittorrent_peers"], counts["bittorrent_seeders"]
    return {
        "torrents": counts["bittorrent_torrents"], "peers": peers, "seeders": seeders, "leechers": peers - seeders,
        "announces": counts["bittorrent_announces"], "scrapes": counts["bittorrent_scrapes"],
    }  # fmt: skip


def stats_view(state: WebState) -> dict[str, Any]:
    service = state.service
    counts = service.registry.counts()
    return {
        "files": counts["files"],
        "peers": counts["peers"],
        "replicas": counts["replicas"],
        "chunk_replicas": counts["chunk_replicas"],
        "connections": service.connections,
        "http_connections": state.http_connections,
        "requests": service.requests,
        "requests_per_second": state.rate.per_second(),
        "uptime_s": round(trio.current_time() - service.started_at, 1),
        "searches": service.searches.total,
        "bittorrent": bittorrent_view(state),
        "recent_searches": [
            {"at": round(search.at, 3), "pattern": search.pattern, "results": search.results, "source": search.source}
            for search in service.searches.recent(RECENT_SEARCHES)
        ],
    }
