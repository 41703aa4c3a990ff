"""Reading a request's query parameters: bounded, and a clear reason (an HTTP 400) for anything wrong."""

from __future__ import annotations

import attrs
from starlette.datastructures import QueryParams

from common.errors import ChunkswarmError
from tracker.web.queries import DEFAULT_PAGE, MAX_OFFSET, MAX_PAGE, MAX_QUERY

__all__ = ["BadRequest", "SearchParams", "search_params", "file_id_param", "integer_param"]


class BadRequest(ChunkswarmError):
    """A request the web UI cannot answer as asked: HTTP 400 with this reason."""


@attrs.frozen
class SearchParams:
    query: str
    offset: int
    limit: int


def integer_param(params: QueryParams, name: str, default: int, low: int, high: int) -> int:
    """Parameter ``name``, a whole number from ``low`` to ``high``; ``default`` when absent."""
    raw = params.get(name)
    if raw is None:
        return default
    if len(raw) > 9 or not raw.isascii() or not raw.isdigit():
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {raw[:20]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}, got {value}")
    return value


def search_params(params: QueryParams) -> SearchParams:
    """``q`` (at most :data:`MAX_QUERY` characters), ``offset`` and ``limit`` (at most :data:`MAX_PAGE`)."""
    query = params.get("q", "")
    if len(query) > MAX_QUERY:
        raise BadRequest(f"q is {len(query)} characters long; at most {MAX_QUERY}")
    if "\x00" in query:
        raise BadRequest("q may not contain a NUL character")
    return SearchParams(
        query.strip(),
        integer_param(params, "offset", 0, 0, MAX_OFFSET),
        integer_param(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE),
    )


def file_id_param(text: str) -> bytes:
    """A file id in a URL: 64 hex digits."""
    if len(text) != 64 or not text.isascii():
        raise BadRequest(f"a file id is 64 hexadecimal digits, got {len(text)} characters")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadRequest("a file id is 64 hexadecimal digits") from None
