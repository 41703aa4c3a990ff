"""Who may look: a private swarm's tracker shows its catalogue only to holders of the swarm's web token.

The token (``common.swarm.web_token``, printed by ``chunkswarm swarm show``)
is derived from the swarm's secret. A script sends it as
``Authorization: Bearer TOKEN``; a browser user enters it once on ``/login``,
which sets it in an HttpOnly, SameSite=Strict cookie. Every comparison is in
constant time (``hmac.compare_digest``). Without it, the API and /metrics
answer 401 (JSON) and a page redirects to the login form. An open tracker's
pages need nothing.
"""

from __future__ import annotations

import hmac
import urllib.parse
from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tracker.web.state import WebState

__all__ = ["Gate", "COOKIE", "login_form", "login", "logout", "safe_next"]

COOKIE: Final = "chunkswarm_token"
#: Seconds a browser keeps the login: 30 days.
COOKIE_AGE: Final = 30 * 86400
#: The largest login form read.
MAX_FORM: Final = 4096
#: Paths open without the token: the login form itself.
OPEN_PATHS: Final = frozenset({"/login", "/logout"})


def _presented(scope: Scope) -> str | None:
    """The token a request carries: a bearer header, else the cookie."""
    cookie: str | None = None
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        elif name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, found = part.strip().partition("=")
                if key == COOKIE:
                    cookie = found
    return cookie


def _valid(state: WebState, token: str | None) -> bool:
    assert state.token is not None
    return token is not None and hmac.compare_digest(token.encode("utf-8", "replace"), state.token.encode())


class Gate:
    """ASGI middleware: counts HTTP requests, and on a private tracker lets through only those with the token."""

    def __init__(self, app: ASGIApp, state: WebState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        state.http_requests += 1
        path: str = scope["path"]
        if state.token is None or path in OPEN_PATHS or _valid(state, _presented(scope)):
            await self.app(scope, receive, send)
            return
        response: Response
        if path.startswith("/api/") or path == "/metrics":
            response = JSONResponse(
                {"error": "this tracker serves a private swarm: send its web token (chunkswarm swarm show) as a bearer token", "status": 401},
                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="chunkswarm"'},
            )  # fmt: skip
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            target = path + ("?" + query if query else "")
            response = RedirectResponse("/login?" + urllib.parse.urlencode({"next": target}), status_code=303)
        await response(scope, receive, send)


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path on this site only (never ``//host`` or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_form(request: Request) -> str:
    return safe_next(request.query_params.get("next"))


async def login(request: Request, state: WebState) -> tuple[bool, str, Response | None]:
    """Check a posted login form: (accepted, next page, the redirect that sets the cookie when accepted)."""
    body = b""
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_FORM:
            return False, "/", None
    fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=4)
    token = (fields.get("token") or [""])[0].strip()
    target = safe_next((fields.get("next") or ["/"])[0])
    if state.token is None or not _valid(state, token):
        return False, target, None
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, max_age=COOKIE_AGE, httponly=True, samesite="strict", path="/")
    return True, target, response


def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
