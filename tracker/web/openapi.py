"""The OpenAPI document of ``/api/v1`` (served at ``/api/v1/openapi.json``): what each endpoint takes and answers, exactly.

The test suite fuzzes the live API against it (schemathesis): every answer
must match, so a field added to ``tracker/web/views.py`` is added here too.
"""

from __future__ import annotations

from typing import Any, Final

from common.version import __version__
from tracker.web.queries import DEFAULT_PAGE, MAX_OFFSET, MAX_PAGE, MAX_QUERY
from tracker.web.views import DEFAULT_PEERS_PAGE, DEFAULT_TORRENTS_PAGE, MAX_PEERS_PAGE, MAX_TORRENTS_PAGE

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": sorted(properties), "properties": properties, "additionalProperties": False}


_INT: Final = {"type": "integer", "minimum": 0}
_NUMBER: Final = {"type": "number", "minimum": 0}
_STRING: Final = {"type": "string"}
_ERROR: Final = _json(_ref("Error"), "The reason, as JSON")

_PEER: Final = {
    "peer_id": {"type": "string", "description": "The peer id, hex"},
    "name": {"type": "string", "description": "Its short node id when identified, else the start of its peer id"},
    "identified": {"type": "boolean"},
    "address": {"type": "string", "description": "HOST:PORT where it serves chunks, as the tracker saw it"},
    "last_heartbeat": {**_NUMBER, "description": "When it was last heard from, in seconds since the epoch"},
    "seconds_since_heartbeat": _NUMBER,
    "online": {"type": "boolean", "description": "False: silent for longer than the peer timeout, dropped at the next sweep"},
    "files": {**_INT, "description": "Files it holds chunks of"},
    "http_port": {"type": "integer", "nullable": True, "description": "Its HTTP gateway's port, when it runs one"},
}
_HOLDER: Final = {
    **_PEER,
    "chunks_held": _INT,
    "complete": {"type": "boolean"},
    "download_url": {"type": "string", "nullable": True, "description": "The file through the holder's HTTP gateway"},
}
_FILE: Final = {
    "id": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "name": _STRING,
    "size": _INT,
    "chunk_size": _INT,
    "chunks": _INT,
    "holders": {**_INT, "description": "Live peers holding at least one chunk"},
    "complete_copies": {**_INT, "description": "Live peers holding every chunk"},
    "get_command": {**_STRING, "description": "The command that downloads it"},
    "peers": {"type": "array", "items": _ref("Holder"), "description": "Some of its holders (all up to 20 per search result, 200 on its own)"},
}
_BT_COUNTERS: Final = {"torrents": _INT, "peers": _INT, "seeders": _INT, "leechers": _INT, "announces": _INT, "scrapes": _INT}
_PAGE_PARAMS: Final = [
    {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
]

_DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {"title": "chunkswarm tracker API", "version": __version__,
             "description": "The catalogue, peers, BitTorrent swarms and counters of one chunkswarm tracker, read live. "
                            "A private swarm's tracker wants its web token (chunkswarm swarm show) as a bearer token."},
    "components": {
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "description": "A private tracker's web token"}},
        "schemas": {
            "Error": _object({"error": _STRING, "status": {"type": "integer", "minimum": 400, "maximum": 599}}),
            "Peer": _object(_PEER),
            "Holder": _object(_HOLDER),
            "File": _object(_FILE),
            "Cell": _object({"first": _INT, "last": _INT, "holders": {**_NUMBER, "description": "Mean holders per chunk of the cell"}}),
            "FileDetail": _object({**_FILE, "availability": {"type": "array", "items": _ref("Cell")}}),
            "FileList": _object({"query": _STRING, "offset": _INT, "limit": _INT, "total": _INT, "files": {"type": "array", "items": _ref("File")}}),
            "PeerList": _object({"offset": _INT, "limit": _INT, "total": _INT, "peers": {"type": "array", "items": _ref("Peer")}}),
            "Torrent": _object({
                "info_hash": {"type": "string", "pattern": "^[0-9a-f]{40}$", "description": "The BitTorrent info-hash, hex"},
                "seeders": _INT, "leechers": _INT, "completed": {**_INT, "description": "Peers that finished downloading it"},
            }),
            "TorrentList": _object({"offset": _INT, "limit": _INT, "total": _INT, "torrents": {"type": "array", "items": _ref("Torrent")}}),
            "Search": _object({"at": _NUMBER, "pattern": _STRING, "results": _INT,
                               "source": {"type": "string", "enum": ["LIST_FILES", "LOOKUP", "web", "api"]}}),
            "Stats": _object({
                "files": _INT, "peers": _INT, "replicas": _INT, "chunk_replicas": _INT, "connections": _INT, "http_connections": _INT,
                "requests": _INT, "requests_per_second": _NUMBER, "uptime_s": _NUMBER, "searches": _INT,
                "recent_searches": {"type": "array", "items": _ref("Search")},
                "bittorrent": {**_object(_BT_COUNTERS), "nullable": True,
                               "description": "The BitTorrent swarms' counters; null while the tracker's BitTorrent side is off"},
            }),
        },
    },
    "security": [{}, {"token": []}],
    "paths": {
        "/api/v1/files": {"get": {
            "summary": "Search the catalogue: names containing q (any case) and ids starting with it, newest first",
            "parameters": [
                {"name": "q", "in": "query", "required": False,
                 "schema": {"type": "string", "maxLength": MAX_QUERY, "pattern": "^[^\\u0000]*$"}},
                *_PAGE_PARAMS,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}},
            ],
            "responses": {"200": _json(_ref("FileList"), "A page of matches"), "400": _ERROR, "401": _ERROR},
        }},
        "/api/v1/files/{file_id}": {"get": {
            "summary": "One file, its holders and its chunk availability",
            "parameters": [{"name": "file_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}],
            "responses": {"200": _json(_ref("FileDetail"), "The file"), "400": _ERROR, "401": _ERROR, "404": _ERROR},
        }},
        "/api/v1/peers": {"get": {
            "summary": "The registered peers, most recently heard first",
            "parameters": [
                *_PAGE_PARAMS,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PEERS_PAGE, "default": DEFAULT_PEERS_PAGE}},
            ],
            "responses": {"200": _json(_ref("PeerList"), "A page of peers"), "400": _ERROR, "401": _ERROR},
        }},
        "/api/v1/torrents": {"get": {
            "summary": "The tracker's BitTorrent swarms (--bt-http, --bt-udp), most peers first; none while its BitTorrent side is off",
            "parameters": [
                *_PAGE_PARAMS,
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TORRENTS_PAGE, "default": DEFAULT_TORRENTS_PAGE}},
            ],
            "responses": {"200": _json(_ref("TorrentList"), "A page of BitTorrent swarms"), "400": _ERROR, "401": _ERROR},
        }},
        "/api/v1/stats": {"get": {
            "summary": "The tracker's counters and its recent searches",
            "responses": {"200": _json(_ref("Stats"), "The counters"), "401": _ERROR},
        }},
    },
}


def openapi_document() -> dict[str, Any]:
    return _DOCUMENT
