"""The gateway's sets (collections, PROTOCOL.md §8.11) over HTTP, under ``/api/v1/sets``.

* ``GET /api/v1/sets/{set}``: the current version (or ``?sequence=N`` / ``?root=HEX``) as JSON:
  name, sequence, root, parent, owners, signer, the counts, and every entry in index order
  (deletions included, marked ``"deleted": true`` with a null ``file_id``: an entry's
  index, which its proof is about, counts them).
* ``GET /api/v1/sets/{set}/files/{index}``: the file of entry ``index``, served as
  ``/files`` serves one (Range, ETag, each chunk verified), with its inclusion proof in
  the ``Chunkswarm-Proof`` header (the base64 of the proof's JSON,
  :func:`common.set_proof.encode_header`) and the version in ``Chunkswarm-Set``,
  ``-Sequence``, ``-Root``, ``-Index``, ``-Count``. A deletion is 410, an index past
  the end 404.
* ``GET /api/v1/sets/{set}/files/{index}/proof``: that proof alone, as JSON (what
  ``chunkswarm collection proof`` writes and ``collection verify --proof`` reads).
* ``POST /api/v1/sets/{set}/files[/{index}]?path=PATH``: :mod:`peer.gateway.set_upload`.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.collection import CollectionVersion, Entry
from common.errors import IntegrityError, ValidationError
from common.identity import format_node_id, node_id
from common.manifest import HASH_SIZE, Manifest, check_publishable_name
from common.set_proof import FileProof, encode_header, proof_at
from peer.gateway.files import Gateway, error_response, serve_manifest
from peer.gateway.set_upload import Gone, check_upload_path
from peer.gateway.set_versions import UnknownSet

__all__ = ["set_routes", "version_json"]

#: The longest index taken (a version has at most 100,000 entries).
_MAX_INDEX_DIGITS: Final = 9


def version_json(version: CollectionVersion) -> dict[str, Any]:
    """A version as the API shows it."""
    live = [entry for entry in version.entries if not entry.deleted]
    return {
        "set": version.name, "sequence": version.sequence, "root": version.root.hex(), "parent": version.parent.hex(),
        "count": len(version.entries), "files": len(live), "bytes": sum(entry.size for entry in live),
        "owners": [{"public_key": key.hex(), "node_id": format_node_id(node_id(key))} for key in version.owners],
        "signer": version.signer.hex(),
        "entries": [_entry_json(index, entry) for index, entry in enumerate(version.entries)],
    }  # fmt: skip


def _entry_json(index: int, entry: Entry) -> dict[str, Any]:
    return {"index": index, "path": entry.path, "size": entry.size, "file_id": None if entry.deleted else entry.file_id.hex(),
            "mode": entry.mode, "mtime_ns": entry.mtime_ns, "deleted": entry.deleted, "modified_by": entry.modified_by.hex(),
            "version": [[node.hex(), counter] for node, counter in entry.version]}  # fmt: skip


def _name(request: Request) -> str:
    name: str = request.path_params["set"]
    try:
        return check_publishable_name(name)
    except ValidationError as exc:
        raise ValidationError(f"set name: {exc}") from None


def _number(text: str | None, what: str, low: int) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_INDEX_DIGITS or int(text) < low:
        raise ValidationError(f"{what} is a whole number of at least {low} (at most {_MAX_INDEX_DIGITS} digits), not {text[:40]!r}")
    return int(text)


def _which(request: Request) -> tuple[int | None, bytes | None]:
    """``?sequence=N`` and ``?root=HEX``: the version asked for (neither: the current one)."""
    sequence = _number(request.query_params.get("sequence"), "sequence", 1)
    text = request.query_params.get("root")
    root = None
    if text is not None:
        try:
            root = bytes.fromhex(text)
        except ValueError:
            root = b""
        if len(root) != HASH_SIZE:
            raise ValidationError(f"root is {2 * HASH_SIZE} hexadecimal digits, not {text[:80]!r}")
    return sequence, root


async def _located(gateway: Gateway, request: Request) -> tuple[CollectionVersion, int, Entry, Manifest]:
    """The version asked for, the index, its entry, and the manifest of its file (held here, else the tracker's)."""
    name = _name(request)
    index = _number(request.path_params["index"], "an entry's index", 0)
    assert index is not None
    version = await gateway.versions.version(name, *_which(request))
    if index >= len(version.entries):
        raise UnknownSet(f"set {name!r} version {version.sequence} has {len(version.entries)} entries: no entry {index}")
    entry = version.entries[index]
    if entry.deleted:
        raise Gone(f"entry {index} of set {name!r} version {version.sequence}, {entry.path!r}, is a deletion")
    held = gateway.peer.library.get(entry.file_id)
    manifest = held.manifest if held is not None else await gateway.peer.get_manifest(entry.file_id)
    if manifest.size != entry.size:
        raise IntegrityError(f"{entry.path!r}: its manifest says {manifest.size} bytes, the set's entry {entry.size}")
    return version, index, entry, manifest


def _proof_headers(proof: FileProof) -> dict[str, str]:
    return {"Chunkswarm-Set": urllib.parse.quote(proof.collection, safe=""), "Chunkswarm-Sequence": str(proof.sequence),
            "Chunkswarm-Root": proof.root.hex(), "Chunkswarm-Index": str(proof.index), "Chunkswarm-Count": str(proof.count),
            "Chunkswarm-Proof": encode_header(proof)}  # fmt: skip


def set_routes(gateway: Gateway) -> list[Route]:
    """The routes under ``/api/v1/sets``."""
    async def show(request: Request) -> Response:
        return JSONResponse(version_json(await gateway.versions.version(_name(request), *_which(request))))

    async def file(request: Request) -> Response:
        version, index, entry, manifest = await _located(gateway, request)
        proof = proof_at(version, index, manifest.chunk_size)
        return await serve_manifest(gateway, request, manifest, entry.path.rsplit("/", 1)[-1], _proof_headers(proof))

    async def proof(request: Request) -> Response:
        version, index, _, manifest = await _located(gateway, request)
        return JSONResponse(proof_at(version, index, manifest.chunk_size).to_dict())

    async def add(request: Request) -> Response:
        uploads = gateway.uploads
        if uploads is None:
            return error_response(403, "this gateway takes no files (it runs without a write token)")
        uploads.authorize(request.headers.get("authorization"))
        name = _name(request)
        path = check_upload_path(request.query_params.get("path"))
        index = _number(request.path_params.get("index"), "an entry's index", 0)
        sequence = _number(request.query_params.get("sequence"), "sequence", 0)
        length = request.headers.get("content-length")
        uploads.check_length(int(length) if length is not None and length.isdigit() else None)
        await uploads.precheck(name, path, index, sequence)  # a refusal that needs no body comes before it is sent
        try:
            incoming = await uploads.receive(path, request.stream())
        except ClientDisconnect:
            return error_response(400, "the body was cut short: the client went away")
        added = await uploads.add(name, path, incoming, index=index, sequence=sequence)
        version = added.version
        where = f"/api/v1/sets/{urllib.parse.quote(name, safe='')}/files/{added.index}?sequence={version.sequence}"
        entry = version.entries[added.index]
        return JSONResponse(
            {"set": name, "sequence": version.sequence, "root": version.root.hex(), "count": len(version.entries), "index": added.index,
             "path": path, "file_id": entry.file_id.hex(), "size": entry.size, "created": added.created, "changed": added.changed},
            status_code=201 if added.created else 200, headers={"Location": where},
        )  # fmt: skip

    return [
        Route("/api/v1/sets/{set}", show, methods=["GET", "HEAD"]),
        Route("/api/v1/sets/{set}/files", add, methods=["POST"]),
        Route("/api/v1/sets/{set}/files/{index}", file, methods=["GET", "HEAD"]),
        Route("/api/v1/sets/{set}/files/{index}", add, methods=["POST"]),
        Route("/api/v1/sets/{set}/files/{index}/proof", proof, methods=["GET"]),
    ]

