"""The HTTP headers of a file response, as pure functions: ``Range``, ``If-None-Match``, ``Content-Disposition``, ``Content-Type``.

No I/O: each takes header text and the file's facts and returns what to
answer, or raises :class:`BadHeader` (400) or :class:`RangeNotSatisfiable`
(416) with the reason the client is told.
"""

from __future__ import annotations

import mimetypes
import re
import urllib.parse
from typing import Final

from common.errors import ValidationError

__all__ = ["BadHeader", "RangeNotSatisfiable", "MAX_RANGE_HEADER", "parse_range", "etag_of", "not_modified", "disposition", "content_type"]

#: A Range header longer than this is refused (400): one range needs about 40 characters.
MAX_RANGE_HEADER: Final = 1024

_SPEC: Final = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*\Z")


class BadHeader(ValidationError):
    """A request header that cannot be read (400)."""


class RangeNotSatisfiable(ValidationError):
    """A well-formed Range no byte of the file satisfies (416, with ``Content-Range: bytes */size``)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one span ``[start, stop)`` of a ``size``-byte file that ``header`` asks for; None: the whole file.

    RFC 9110 §14.2: ``bytes=A-B``, ``bytes=A-`` and ``bytes=-N`` (the last N
    bytes). Several ranges are served as the whole file (a server may ignore
    Range), as is a unit other than bytes. A span starting at or past the end,
    or a suffix of zero bytes, is not satisfiable; a span whose end is past the
    end of the file is cut to it. Malformed specs are a :class:`BadHeader`.
    """
    if header is None:
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise BadHeader(f"Range header of {len(header)} characters (at most {MAX_RANGE_HEADER})")
    unit, eq, specs = header.partition("=")
    if not eq:
        raise BadHeader(f"malformed Range header {header[:80]!r}: expected bytes=START-END")
    if unit.strip().lower() != "bytes":
        return None  # a unit we do not serve: the whole file (RFC 9110 §14.2)
    spans = [_span(spec, size, header) for spec in specs.split(",") if spec.strip()]
    if not spans:
        raise BadHeader(f"malformed Range header {header[:80]!r}: no range")
    if len(spans) > 1:
        return None  # several ranges: served as the whole file, which RFC 9110 allows
    span = spans[0]
    if span is None:
        raise RangeNotSatisfiable(f"range {specs.strip()[:80]!r} is outside the file's {size} bytes")
    return span


def _span(spec: str, size: int, header: str) -> tuple[int, int] | None:
    match = _SPEC.match(spec)
    if match is None or not (match[1] or match[2]) or len(match[1]) > 20 or len(match[2]) > 20:
        raise BadHeader(f"malformed Range header {header[:80]!r}: expected bytes=START-END, bytes=START- or bytes=-LENGTH")
    if not match[1]:  # the last N bytes
        length = int(match[2])
        return (max(0, size - length), size) if length and size else None
    start = int(match[1])
    if match[2] and int(match[2]) < start:
        raise BadHeader(f"malformed Range header {header[:80]!r}: the range ends before it starts")
    stop = min(size, int(match[2]) + 1) if match[2] else size
    return (start, stop) if start < size else None


def etag_of(hex_id: str) -> str:
    """The entity tag of a file: its id, quoted (the content is the id's, whatever its name)."""
    return f'"{hex_id}"'


def not_modified(if_none_match: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` names ``etag`` (or ``*``): then the answer is 304. Weak tags compare equal (RFC 9110 §13.1.2)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def disposition(name: str) -> str:
    """``Content-Disposition`` naming the file: an ASCII fallback and the exact name, percent-encoded (RFC 6266, RFC 8187)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%;' else "_" for c in name) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


def content_type(name: str) -> str:
    """The media type guessed from the name's extension; ``application/octet-stream`` when there is no guess."""
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if guessed is None or encoding is not None:  # a .gz is bytes to a client, not text with an encoding
        return "application/octet-stream"
    return guessed  # no charset: a name says nothing of a text's encoding
