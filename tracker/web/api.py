"""The JSON API under ``/api/v1`` (described by ``tracker/web/openapi.py``) and its errors: JSON with the right status."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from common.errors import TrackerError
from common.framing import ErrorCode
from tracker.web.openapi import openapi_document
from tracker.web.params import BadRequest
from tracker.web.state import WebState
from tracker.web.views import file_view, peers_view, search_view, stats_view, torrents_page_view

__all__ = ["api_routes", "error_status", "json_error"]


def error_status(exc: Exception) -> tuple[int, str]:
    """The HTTP status and reason of an error raised while answering."""
    if isinstance(exc, BadRequest):
        return 400, str(exc)
    if isinstance(exc, TrackerError) and exc.code == ErrorCode.UNKNOWN_FILE:
        return 404, str(exc)
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail)
    return 500, "internal error"


def json_error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": reason, "status": status}, status_code=status, headers=headers)


def api_routes(state: WebState) -> list[BaseRoute]:
    async def files(request: Request) -> Response:
        return JSONResponse(await search_view(state, request, "api"))

    async def one_file(request: Request) -> Response:
        return JSONResponse(await file_view(state, request, request.path_params["file_id"]))

    async def peers(request: Request) -> Response:
        return JSONResponse(peers_view(state, request))

    async def torrents(request: Request) -> Response:
        return JSONResponse(torrents_page_view(state, request))

    async def stats(request: Request) -> Response:
        return JSONResponse(stats_view(state))

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    return [
        Route("/api/v1/files", files, methods=["GET"]),
        Route("/api/v1/files/{file_id}", one_file, methods=["GET"]),
        Route("/api/v1/peers", peers, methods=["GET"]),
        Route("/api/v1/torrents", torrents, methods=["GET"]),
        Route("/api/v1/stats", stats, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    ]
