"""HTTP/1.1 requests of announce and scrape, framed by hand; sans-I/O.

A tracker's requests are GETs with a query string and a handful of headers,
so the request line and headers are split here rather than by a general
HTTP library (h11 costs more per request than an announce itself; see
``bench/bt_tracker.py``). Keep-alive and pipelining work as HTTP/1.1 says;
the limits are strict: a request line of at most ``MAX_LINE`` bytes, a head
of at most ``MAX_HEAD``, ``MAX_HEADERS`` headers, and no body. What breaks
them is a :class:`BadHttpRequest` with the status to answer before closing.

Use: ``receive_data(data)`` (``b""`` for the end of the stream), then
:meth:`RequestReader.next_request` until it returns None (more data needed).
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from tracker.bittorrent.errors import BadHttpRequest

__all__ = ["HttpRequest", "RequestReader", "response", "MAX_LINE", "MAX_HEAD", "MAX_HEADERS"]

#: The longest request line: an announce is ~300 bytes, a scrape of 74 hashes ~4,500.
MAX_LINE: Final = 8192
#: The longest head (request line and headers together).
MAX_HEAD: Final = 16384
MAX_HEADERS: Final = 64
_REQUEST_LINE: Final = re.compile(rb"([A-Z]{1,16}) (/[!-~]*) HTTP/1\.([01])\Z")
#: A header: a token, a colon, a value of visible characters, spaces and tabs (no obs-fold, no bare CR).
_HEADER: Final = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~\x80-\xff]*?)[ \t]*\Z")
_REASONS: Final = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
                   414: b"URI Too Long", 431: b"Request Header Fields Too Large", 501: b"Not Implemented"}  # fmt: skip


class HttpRequest(NamedTuple):
    """A request's path and query string (bytes as sent) and whether the connection stays open after its answer."""

    path: bytes
    query: bytes
    keep_alive: bool


class RequestReader:
    """Splits a byte stream into :class:`HttpRequest`; refuses for good after the first bad one."""

    __slots__ = ("_buffer", "_scanned", "_ended", "_broken")

    def __init__(self) -> None:
        self._buffer = bytearray()
        #: How far the buffer was searched for the end of a head, so a slow client is not rescanned.
        self._scanned = 0
        self._ended = False
        self._broken = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray) -> None:
        if data:
            self._buffer += data
        else:
            self._ended = True

    def next_request(self) -> HttpRequest | None:
        """The next complete request, or None until more data comes (or for good, at the end of the stream)."""
        if self._broken:
            raise BadHttpRequest("the connection already sent a bad request")
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            self._check_partial()
            return None
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        self._scanned = 0
        try:
            return self._parse(head)
        except BadHttpRequest:
            self._broken = True
            raise

    def _check_partial(self) -> None:
        buffer = self._buffer
        self._scanned = len(buffer)
        line_end = buffer.find(b"\r\n", 0, MAX_LINE + 2)
        if (line_end < 0 and len(buffer) > MAX_LINE) or len(buffer) > MAX_HEAD:
            self._broken = True
            if line_end < 0:
                raise BadHttpRequest(f"request line longer than {MAX_LINE} bytes", 414)
            raise BadHttpRequest(f"request head longer than {MAX_HEAD} bytes", 431)
        if self._ended and buffer:
            self._broken = True
            raise BadHttpRequest("the connection ended inside a request")

    def _parse(self, head: bytes) -> HttpRequest:
        if len(head) > MAX_HEAD:
            raise BadHttpRequest(f"request head longer than {MAX_HEAD} bytes", 431)
        lines = head.split(b"\r\n")
        if len(lines[0]) > MAX_LINE:
            raise BadHttpRequest(f"request line longer than {MAX_LINE} bytes", 414)
        if len(lines) > MAX_HEADERS + 1:
            raise BadHttpRequest(f"more than {MAX_HEADERS} headers", 431)
        match = _REQUEST_LINE.match(lines[0])
        if match is None:
            raise BadHttpRequest("malformed request line")
        method, target, minor = match.groups()
        if method != b"GET":
            raise BadHttpRequest(f"method {method.decode()} not allowed: announce and scrape are GETs", 405)
        keep_alive = minor == b"1"
        for line in lines[1:]:
            header = _HEADER.match(line)
            if header is None:
                raise BadHttpRequest("malformed header line")
            name = header[1].lower()
            if name == b"connection":
                tokens = {token.strip().lower() for token in header[2].split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"transfer-encoding" or (name == b"content-length" and header[2] != b"0"):
                raise BadHttpRequest("a request with a body: announce and scrape have none", 400)
        path, _, query = target.partition(b"?")
        return HttpRequest(path, query, keep_alive)


def response(status: int, body: bytes, *, close: bool = False, content_type: bytes = b"text/plain") -> bytes:
    """An HTTP/1.1 response with ``body``, saying ``Connection: close`` when the connection ends after it."""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status, _REASONS.get(status, b"Error"), content_type, len(body), b"Connection: close\r\n" if close else b"", body,
    )  # fmt: skip
