"""The web UI's pages: server-rendered Jinja2 templates (autoescaped: every name is shown as text), usable without JavaScript.

``/`` searches, ``/files/{id}`` shows one file and its chunk availability,
``/stats`` the peers, counters, BitTorrent swarms (when on) and recent searches; the stats page reloads
its panel (``/stats/panel``, the same HTML) every few seconds with a few
lines of JavaScript, so a peer that joins appears without a reload.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Final

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from common.wording import format_size
from tracker.web import access
from tracker.web.queries import HOLDERS_PER_RESULT, MAX_QUERY
from tracker.web.state import WebState
from tracker.web.views import TORRENTS_SHOWN, file_view, peers_view, search_view, stats_view, torrents_view

__all__ = ["Pages", "POLL_SECONDS"]

#: Every page's: scripts and fetches from this site only (the stats page's few lines are inline).
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}
#: How often an open stats page refreshes its panel.
POLL_SECONDS: Final = 2.0


def _clock(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def _shade(holders: float, most: float) -> str:
    """A cell's colour: red for a chunk nobody holds, then lighter to darker green with more holders."""
    if holders <= 0:
        return "hsl(0, 70%, 55%)"
    level = min(1.0, holders / most) if most > 0 else 1.0
    return f"hsl(140, 55%, {round(80 - 50 * level)}%)"


class Pages:
    def __init__(self, state: WebState) -> None:
        self.state = state
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("tracker.web", "templates"),
            autoescape=True,  # every name, pattern and address is text, never markup
            undefined=jinja2.StrictUndefined,
        )
        self.env.filters.update(size=format_size, clock=_clock, duration=_duration)
        self.env.globals.update(shade=_shade, private=state.private, poll_ms=int(POLL_SECONDS * 1000), max_query=MAX_QUERY)

    def render(self, template: str, status: int = 200, headers: Mapping[str, str] | None = None, **context: Any) -> Response:
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={**HEADERS, **(headers or {})})

    def error(self, request: Request, status: int, reason: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.render("error.html", status, headers, title=f"Error {status}", reason=reason)

    def routes(self) -> list[BaseRoute]:
        state = self.state

        async def search_page(request: Request) -> Response:
            query = request.query_params.get("q")
            if query is None:  # the bare form: no search yet, so nothing to log
                return self.render("search.html", title="Search", result=None, query="", per_result=HOLDERS_PER_RESULT)
            result = await search_view(state, request, "web")
            return self.render("search.html", title=f"Search: {result['query']}", result=result, query=result["query"], per_result=HOLDERS_PER_RESULT)

        async def file_page(request: Request) -> Response:
            detail = await file_view(state, request, request.path_params["file_id"])
            most = max((cell["holders"] for cell in detail["availability"]), default=0)
            return self.render("file.html", title=detail["name"], file=detail, most=most)

        def _stats_context(request: Request) -> dict[str, Any]:
            return {"stats": stats_view(state), "peers": peers_view(state, request), "torrents": torrents_view(state, 0, TORRENTS_SHOWN)}

        async def stats_page(request: Request) -> Response:
            return self.render("stats.html", title="Stats", **_stats_context(request))

        async def stats_panel(request: Request) -> Response:
            return self.render("stats_panel.html", **_stats_context(request))

        async def login_page(request: Request) -> Response:
            if request.method == "POST":
                _, target, response = await access.login(request, state)
                if response is not None:
                    return response
                return self.render("login.html", 401, title="Log in", target=target, failed=True)
            return self.render("login.html", title="Log in", target=access.login_form(request), failed=False)

        async def logout_page(request: Request) -> Response:
            return access.logout()

        return [
            Route("/", search_page, methods=["GET"]),
            Route("/files/{file_id}", file_page, methods=["GET"]),
            Route("/stats", stats_page, methods=["GET"]),
            Route("/stats/panel", stats_panel, methods=["GET"]),
            Route("/login", login_page, methods=["GET", "POST"]),
            Route("/logout", logout_page, methods=["POST"]),
        ]
