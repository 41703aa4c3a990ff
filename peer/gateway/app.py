"""The gateway's ASGI app (Starlette): ``GET``/``HEAD /files/{id, id prefix or name}`` and ``GET /files``.

A name is resolved as ``get`` resolves it (``peer.catalogue.resolve_entry``):
among the files this peer holds first, then on the tracker. A held file is
read from disk; any other is fetched from the swarm (``peer.gateway.fetches``)
and streamed in order as its chunks verify. Errors are JSON
``{"error": reason, "status": code}``, translated once, here, from
``common.errors``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.errors import (
    AmbiguousFile,
    ChunkswarmError,
    CollectionConflict,
    IntegrityError,
    NoHolders,
    NotAnOwner,
    NotASuccessor,
    StorageError,
    TrackerError,
    TrackerUnavailable,
    UnknownFile,
    ValidationError,
)
from peer.gateway.files import MAX_NAME, Gateway, error_response, serve_named
from peer.gateway.headers import RangeNotSatisfiable
from peer.gateway.set_upload import BodyTooLarge, Gone, IndexConflict, Unauthorized
from peer.gateway.sets import set_routes

__all__ = ["Gateway", "build_app", "MAX_NAME"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: common.errors -> HTTP status, the first match in order.
_STATUS: Final[tuple[tuple[type[ChunkswarmError], int], ...]] = (
    (RangeNotSatisfiable, 416),
    (Unauthorized, 401),
    (NotAnOwner, 403),  # the node's key may not sign a version of that set
    (Gone, 410),
    (UnknownFile, 404),
    (AmbiguousFile, 409),
    (CollectionConflict, 409),
    (IndexConflict, 409),
    (BodyTooLarge, 413),
    (NotASuccessor, 502),  # the tracker's chain of versions does not follow
    (ValidationError, 400),
    (NoHolders, 503),
    (TrackerUnavailable, 503),
    (TrackerError, 502),
    (IntegrityError, 502),
    (StorageError, 500),
    (ChunkswarmError, 500),
)


def build_app(gateway: Gateway) -> ASGIApp:
    """The ASGI app: the routes behind :class:`Guard`."""

    async def file(request: Request) -> Response:
        return await serve_named(gateway, request)

    async def files(request: Request) -> Response:
        return JSONResponse({"files": gateway.listing()})

    async def chunkswarm_error(request: Request, exc: Exception) -> Response:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        if status >= 500:
            logger.warning("gateway: %s %s: %s", request.method, request.url.path, exc)
        extra = {"sequence": exc.current_sequence} if isinstance(exc, CollectionConflict) else getattr(exc, "extra", None)
        return error_response(status, str(exc), getattr(exc, "headers", None), extra)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, exc.detail, dict(exc.headers or {}))

    app = Starlette(
        routes=[Route("/files", files, methods=["GET", "HEAD"]), Route("/files/{name:path}", file, methods=["GET", "HEAD"]),
                *set_routes(gateway)],
        exception_handlers={ChunkswarmError: chunkswarm_error, HTTPException: http_error},
    )
    return Guard(app, gateway)


@attrs.define(eq=False)
class Guard:
    """ASGI middleware, before any routing: ``--allow`` (403), the cap on header bytes (431) and on requests at once (503)."""

    app: ASGIApp
    gateway: Gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        gateway = self.gateway
        header_bytes = sum(len(name) + len(value) + 4 for name, value in scope["headers"])
        client = (scope.get("client") or ("", 0))[0]
        allow = gateway.peer.config.allow
        if allow and not allow.admits(client):  # --allow: the same ranges as for peers
            response: Response = error_response(403, f"{client} is not in this peer's --allow ranges")
        elif header_bytes > gateway.max_header_bytes:
            response = error_response(431, f"request headers of {header_bytes} bytes (at most {gateway.max_header_bytes})")
        elif gateway.active >= gateway.max_requests:
            response = error_response(503, f"the gateway serves {gateway.max_requests} requests at once; try again later",
                                      {"Retry-After": "1", "Connection": "close"})  # fmt: skip
        else:
            gateway.active += 1
            try:
                await self.app(scope, receive, send)
            finally:
                gateway.active -= 1
            return
        await response(scope, receive, send)
