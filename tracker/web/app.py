"""The ASGI app of a tracker's web UI: pages, the JSON API, /metrics, behind the access gate; errors answered once here."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.errors import TrackerError
from tracker.web.access import Gate
from tracker.web.api import api_routes, error_status, json_error
from tracker.web.metrics import metrics_registry, metrics_response
from tracker.web.pages import Pages
from tracker.web.params import BadRequest
from tracker.web.state import WebState

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(state: WebState) -> Starlette:
    pages = Pages(state)
    registry = metrics_registry(state)

    async def metrics(request: Request) -> Response:
        return metrics_response(registry)

    async def on_error(request: Request, exc: Exception) -> Response:
        status, reason = error_status(exc)
        if status >= 500:
            log.error("web UI: %s %s failed", request.method, request.url.path, exc_info=exc)
        else:
            log.debug("web UI: %s %s: %d %s", request.method, request.url.path, status, reason)
        headers = exc.headers if isinstance(exc, HTTPException) else None  # a 405's Allow
        if request.url.path.startswith("/api/") or request.url.path == "/metrics":
            return json_error(status, reason, headers)
        return pages.error(request, status, reason, headers)

    routes = [*pages.routes(), *api_routes(state), Route("/metrics", metrics, methods=["GET"])]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Gate, state=state)],
        exception_handlers={BadRequest: on_error, TrackerError: on_error, HTTPException: on_error, Exception: on_error},
    )
