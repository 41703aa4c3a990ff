"""A client of a gateway's sets: fetch one file of a set over HTTP and check it against the root the user kept.

The check is :class:`common.set_proof.FileCheck` (sans-I/O); this module is
the thin, blocking fetch around it (``urllib``, for a command line: call it
through a thread from async code). The version asked for is the kept one
(``?root=``); whatever the gateway sends, the proof in its
``Chunkswarm-Proof`` header must place the entry under that root before a byte
is written, and the bytes must be that entry's file, or nothing is kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

import attrs

from common.errors import ChunkswarmError, IntegrityError, StorageError, ValidationError
from common.set_proof import FileCheck, FileProof, decode_header

__all__ = ["GatewayRefused", "Fetched", "fetch_set_file", "set_url", "find_index"]

#: Bytes read from the response at once.
_READ: Final = 1024 * 1024
#: The largest error or listing body read.
_MAX_JSON: Final = 64 * 1024 * 1024


class GatewayRefused(ChunkswarmError):
    """The gateway answered with an error status; ``status`` is it, the message its reason."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class Fetched:
    path: pathlib.Path
    proof: FileProof


def set_url(base: str, name: str, suffix: str = "", **query: str) -> str:
    """``base``/api/v1/sets/NAME``suffix`` with ``query``."""
    url = f"{base.rstrip('/')}/api/v1/sets/{urllib.parse.quote(name, safe='')}{suffix}"
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def _open(url: str, timeout: float) -> Any:
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"a gateway's address is http://HOST:PORT, not {url[:200]!r}")
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read(_MAX_JSON))["error"]
        except (ValueError, KeyError, TypeError):
            reason = exc.reason
        raise GatewayRefused(f"the gateway answered {exc.code}: {reason}", exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        raise StorageError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def find_index(base: str, name: str, root: bytes, path: str, *, timeout: float = 60.0) -> int:
    """The index of ``path`` in the version of set ``name`` with root ``root``, from the gateway's listing."""
    with _open(set_url(base, name, root=root.hex()), timeout) as response:
        listing = json.loads(response.read(_MAX_JSON))
    for entry in listing.get("entries", ()):
        if entry.get("path") == path:
            return int(entry["index"])
    raise GatewayRefused(f"set {name!r} has no {path!r} in the version with root {root.hex()}", 404)


def fetch_set_file(base: str, name: str, index: int, root: bytes, out: pathlib.Path, *, timeout: float = 60.0) -> Fetched:
    """Blocking: entry ``index`` of the version of set ``name`` whose root is ``root``, from the gateway at ``base``, into ``out``.

    Written to ``out`` (through a temporary file beside it) only once every
    check passed; :class:`IntegrityError` says which failed, and nothing is kept.
    """
    with _open(set_url(base, name, f"/files/{index}", root=root.hex()), timeout) as response:
        header = response.headers.get("Chunkswarm-Proof")
        if header is None:
            raise IntegrityError("the gateway sent no Chunkswarm-Proof header: the file cannot be checked")
        proof = decode_header(header)
        if proof.collection != name or proof.index != index:
            raise IntegrityError(f"asked for entry {index} of {name!r}, the proof is about entry {proof.index} of {proof.collection!r}")
        check = FileCheck(proof, root)  # the placement: before any byte is read
        temporary = out.with_name(f".{out.name}.chunkswarm-fetch")
        try:
            with open(temporary, "wb") as handle:
                while block := response.read(_READ):
                    check.receive_data(block)
                    handle.write(block)
            check.finish()
            os.replace(temporary, out)
        except OSError as exc:
            raise StorageError(f"cannot write {out}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return Fetched(out, proof)
