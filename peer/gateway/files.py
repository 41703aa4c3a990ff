"""What the gateway serves files from: :class:`Gateway` (the peer, its fetches, its limits) and file responses.

A file response (:func:`serve_manifest`) is the same whoever names the file,
``GET /files/{name}`` or ``GET /api/v1/sets/{set}/files/{index}``: ``ETag``
(the file id), ``Range``, ``If-None-Match``, and the bytes of a held copy or of
a fetch from the swarm, every chunk verified before it is sent
(:mod:`peer.gateway.body`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import attrs
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.errors import ChunkswarmError, StorageError, UnknownFile, ValidationError
from common.manifest import Manifest
from common.messages import FileEntry
from peer.catalogue import resolve_entry
from peer.gateway.body import Available, send_span
from peer.gateway.fetches import Fetch, Fetches
from peer.gateway.headers import RangeNotSatisfiable, content_type, disposition, etag_of, not_modified, parse_range
from peer.gateway.set_upload import Uploads
from peer.gateway.set_versions import SetVersions
from peer.node import Peer
from peer.tasks import open_nursery

__all__ = ["Gateway", "FileBody", "serve_manifest", "serve_named", "error_response", "MAX_NAME"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: A name or id prefix longer than this is refused (400): no published name is (PROTOCOL.md §4.3).
MAX_NAME: Final = 1024

def error_response(status: int, reason: str, headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> JSONResponse:
    """The JSON error every status >= 400 gets: ``{"error": reason, "status": code}`` (and ``extra`` fields)."""
    return JSONResponse({"error": reason, "status": status, **(extra or {})}, status_code=status, headers=headers)


@attrs.define(eq=False)
class Gateway:
    """What the app serves from: the peer, its downloads for the gateway, and the limits."""

    peer: Peer
    fetches: Fetches
    #: The sets (collections) served under /api/v1/sets, each version checked.
    versions: SetVersions
    #: Where POSTed files go and who may POST; None: no writes.
    uploads: Uploads | None = None
    #: Requests served at once; more are answered 503 at once.
    max_requests: int = 64
    #: Request headers larger than this in all are answered 431.
    max_header_bytes: int = 8192
    #: Worker threads reading files for the gateway, apart from the peer's own.
    readers: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(4))
    active: int = attrs.field(init=False, default=0)

    async def resolve(self, query: str) -> Manifest:
        """The manifest of the file ``query`` names: held here first (``get``'s rules), else on the tracker."""
        if not query or len(query) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in query):
            raise ValidationError(f"a file name or id prefix is 1 to {MAX_NAME} characters, without control characters")
        held = [h for h in self.peer.library.files.values() if not h.withdrawn]
        local = [FileEntry(h.manifest.file_id, h.manifest.name, h.manifest.size, h.manifest.chunk_size, h.manifest.chunk_count, 1,
                           int(h.have.complete)) for h in held]  # fmt: skip
        try:
            return self.peer.library.files[resolve_entry(query, local).file_id].manifest
        except UnknownFile:
            pass
        entry = await self.peer.resolve(query)
        return await self.peer.get_manifest(entry.file_id)

    def listing(self) -> list[dict[str, Any]]:
        return [
            {"id": h.manifest.hex_id, "name": h.manifest.name, "size": h.manifest.size, "chunks": h.manifest.chunk_count,
             "chunks_held": len(h.have), "complete": h.have.complete}
            for h in self.peer.library.files.values()
            if not h.withdrawn
        ]


class FileBody(Response):
    """A file response: headers, then (not for HEAD) the verified bytes of ``span`` from ``fd``, which it closes.

    When the bytes cannot all be sent (a chunk failed verification, the swarm
    could not deliver) the body ends short of its Content-Length: the app
    returns without finishing it and the server closes the connection.
    """

    def __init__(self, status: int, headers: dict[str, str], manifest: Manifest, span: tuple[int, int] | None = None,
                 fd: int = -1, available: Available | None = None, readers: trio.CapacityLimiter | None = None) -> None:  # fmt: skip
        super().__init__(status_code=status, headers=headers)
        self.manifest, self.span, self.fd, self.available, self.readers = manifest, span, fd, available, readers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self.span is None or self.available is None:
                await send({"type": "http.response.body", "body": b""})
                return

            async def body(data: bytes) -> None:
                await send({"type": "http.response.body", "body": data, "more_body": True})

            async def until_disconnected(scope: trio.CancelScope) -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                scope.cancel()  # the client is gone: read no more of the file for it

            try:
                async with open_nursery() as nursery:  # an error of send_span comes out as itself
                    nursery.start_soon(until_disconnected, nursery.cancel_scope)
                    await send_span(self.manifest, self.fd, *self.span, self.available, body, self.readers)
                    nursery.cancel_scope.cancel()
            except ChunkswarmError as exc:
                logger.warning("gateway: %s: response cut short: %s", self.manifest.name, exc)
                return  # unfinished: the client sees a body shorter than its Content-Length
            await send({"type": "http.response.body", "body": b""})
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


async def serve_named(gateway: Gateway, request: Request) -> Response:
    """``GET /files/{name}``: the file the name (or id prefix) names."""
    manifest = await gateway.resolve(request.path_params["name"])
    return await serve_manifest(gateway, request, manifest)


async def serve_manifest(gateway: Gateway, request: Request, manifest: Manifest, name: str | None = None,
                         extra: dict[str, str] | None = None) -> Response:  # fmt: skip
    """The response to a GET or HEAD of ``manifest``'s file: whole, a range, or 304; named ``name`` (default: the manifest's)."""
    size, etag = manifest.size, etag_of(manifest.hex_id)
    name = name or manifest.name
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Content-Type": content_type(name),
               "Content-Disposition": disposition(name), **(extra or {})}  # fmt: skip
    if not_modified(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag, **(extra or {})})
    if_range = request.headers.get("if-range")
    try:
        span = parse_range(request.headers.get("range") if if_range in (None, etag) else None, size)
    except RangeNotSatisfiable as exc:
        return error_response(416, str(exc), {"Content-Range": f"bytes */{size}", "ETag": etag, "Accept-Ranges": "bytes"})
    status = 200 if span is None else 206
    start, stop = span or (0, size)
    if span is not None:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    headers["Content-Length"] = str(stop - start)
    if request.method == "HEAD" or start == stop:
        return FileBody(status, headers, manifest)
    fd, available = await _source(gateway, manifest, start)
    return FileBody(status, headers, manifest, (start, stop), fd, available, gateway.readers)


async def _source(gateway: Gateway, manifest: Manifest, start: int) -> tuple[int, Available]:
    """A descriptor of the file (the request's own) and what says which chunks can be read: the held copy, or a fetch.

    A fetch is waited on until the first chunk sent is verified, so a swarm that
    cannot deliver at all is answered with an error status, not a short body.
    """
    held = gateway.peer.library.get(manifest.file_id)
    if held is not None and not held.withdrawn and held.have.complete:
        count = manifest.chunk_count

        async def everything(index: int) -> int:
            return count - index

        return os.dup(held.fd), everything
    fetch: Fetch = gateway.fetches.fetch(manifest)
    await fetch.wait_for(start // manifest.chunk_size)
    held = fetch.held()
    if held is None:  # gone in between (the download was given up)
        raise fetch.error or StorageError(f"{manifest.name}: the download was given up")
    return os.dup(held.fd), fetch.wait_for


