"""``POST /api/v1/sets/{set}/files[/{index}]?path=PATH``: a file added to a set (or put in place of one) by this node.

Who may: the holder of the gateway's write token (``Authorization: Bearer
TOKEN``; the app keeps it in the node's state folder and ``chunkswarm
collection token`` prints it), checked in constant time before a byte of the
body is read. A POST makes this node publish under its key, so the port alone
is not enough: a gateway may listen on a LAN address for downloads, and even
loopback is open to every local user. A web page cannot send the header to
another origin without a CORS preflight, which the gateway never answers, so
a browser cannot be made to POST for its user either.

What happens: the body (at most ``max_bytes``: 413 past it, from the
Content-Length at once, else as it arrives) is written to a folder of its own
under ``incoming/``, hashed and served; then, under a lock per set (this
gateway's POSTs to one set one after the other), the current version is
fetched and checked, a new version with the file at PATH is signed by the
node's key (403 if it is not an owner), and the file's PUBLISH and ANNOUNCE
and the version's PUBLISH_COLLECTION go to the tracker in one write. The
tracker takes the version only if its parent is still the current root (a
compare-and-swap): another node's version in between is a 409 naming the
current sequence. Only then is the file moved to ``sets/SET/PATH``, where it
stays, served (:meth:`Uploads.restore` serves it again after a restart).

The index: entries are sorted by path, so PATH's index is its current one
when PATH is in the set (the file replaces it), else the number of paths
sorting before it (an addition). ``POST .../files`` lets the gateway say it;
``POST .../files/{index}`` asserts it (409 with the right one otherwise), and
``?sequence=N`` asserts the version the client looked at (409 if another came).
"""

from __future__ import annotations

import bisect
import hmac
import logging
import os
import pathlib
import secrets
import shutil
import time
from collections.abc import AsyncIterator
from typing import Final

import attrs
import trio

from common.chunkset import ChunkSet
from common.collection import CollectionVersion, Entry, check_path, sign_version, vv_bump
from common.collection_messages import PublishCollection
from common.errors import ChunkswarmError, CollectionConflict, NotAnOwner, StorageError, UnknownFile, ValidationError
from common.framing import ErrorCode
from common.identity import short_id
from common.manifest import ZERO_HASH, Manifest, build_manifest
from common.messages import Announce, Error, Message, Ok, Publish, Published
from peer.collection_files import safe_target
from peer.collections import check_publish_reply
from peer.gateway.set_versions import SetVersions
from peer.node import Peer
from peer.storage.fs import file_signature
from peer.storage.library import HeldFile, open_published
from peer.tracker_client import check_reply

__all__ = ["SetWrites", "Uploads", "Added", "Unauthorized", "BodyTooLarge", "Gone", "IndexConflict", "MIN_TOKEN"]

logger = logging.getLogger(__name__)

#: The shortest write token taken: 128 bits in hexadecimal or base64.
MIN_TOKEN: Final = 22
#: Bytes of the body gathered before one write to disk (in a worker thread).
_WRITE: Final = 1024 * 1024
#: The mode of a file added over HTTP.
_MODE: Final = 0o644


class Unauthorized(ChunkswarmError):
    """A POST without the gateway's write token (401)."""

    headers: Final = {"WWW-Authenticate": 'Bearer realm="chunkswarm"'}


class BodyTooLarge(ValidationError):
    """A body over the gateway's cap (413)."""


class Gone(UnknownFile):
    """An entry that is a deletion in that version (410)."""


class IndexConflict(ValidationError):
    """A POST to an index other than the one PATH takes (409); ``extra`` says the right one."""

    def __init__(self, message: str, index: int, sequence: int) -> None:
        super().__init__(message)
        self.extra = {"index": index, "sequence": sequence}


@attrs.frozen
class SetWrites:
    """Who may POST files into sets (the token), where they are kept, and how large one may be."""

    token: str = attrs.field(validator=lambda _, __, value: _check_token(value), repr=False)
    #: ``incoming/`` (bodies being received) and ``sets/SET/PATH`` (the files published) go here.
    folder: pathlib.Path = attrs.field(converter=pathlib.Path)
    max_bytes: int = attrs.field(default=1024**3, validator=attrs.validators.ge(0))


def _check_token(token: object) -> None:
    if type(token) is not str or len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
        raise ValidationError(f"a write token is at least {MIN_TOKEN} printable ASCII characters without spaces")


@attrs.frozen
class Added:
    """What a POST did: the version now current, the file's index in it, and whether the path is new to the set."""

    version: CollectionVersion
    index: int
    created: bool
    changed: bool


@attrs.define(eq=False)
class Uploads:
    """The gateway's writes: the token check, receiving bodies, and publishing new versions one at a time per set."""

    peer: Peer
    versions: SetVersions
    writes: SetWrites
    _locks: dict[str, trio.Lock] = attrs.field(init=False, factory=dict)

    def authorize(self, header: str | None) -> None:
        """Raise :class:`Unauthorized` unless ``header`` is ``Bearer TOKEN`` with this gateway's token."""
        scheme, _, token = (header or "").partition(" ")
        given = token.strip().encode("utf-8", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.writes.token.encode()):
            raise Unauthorized("a POST needs this node's gateway write token as 'Authorization: Bearer TOKEN' "
                               "(chunkswarm collection token prints it)")  # fmt: skip

    def check_length(self, declared: int | None) -> None:
        if declared is not None and declared > self.writes.max_bytes:
            raise BodyTooLarge(f"a body of {declared} bytes: this gateway takes at most {self.writes.max_bytes}")

    async def receive(self, path: str, body: AsyncIterator[bytes]) -> pathlib.Path:
        """Write ``body`` to a new folder under ``incoming/``, named as PATH's last segment; the file's path."""
        folder = self.writes.folder / "incoming" / secrets.token_hex(8)
        target = folder / path.rsplit("/", 1)[-1]
        await trio.to_thread.run_sync(lambda: folder.mkdir(parents=True))
        try:
            handle = await trio.to_thread.run_sync(lambda: open(target, "xb"))  # noqa: SIM115  (closed below, in a thread)
            try:
                size, pending = 0, bytearray()
                async for piece in body:
                    size += len(piece)
                    if size > self.writes.max_bytes:
                        raise BodyTooLarge(f"the body is over the {self.writes.max_bytes} bytes this gateway takes")
                    pending += piece
                    if len(pending) >= _WRITE:
                        await trio.to_thread.run_sync(handle.write, bytes(pending))
                        pending.clear()
                await trio.to_thread.run_sync(handle.write, bytes(pending))
            finally:
                await trio.to_thread.run_sync(handle.close)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shutil.rmtree, folder, True)
            raise
        return target

    async def add(self, name: str, path: str, incoming: pathlib.Path, *, index: int | None = None, sequence: int | None = None) -> Added:
        """Publish ``incoming`` as PATH of set ``name`` in a new version signed by this node; then keep it under ``sets/``."""
        keep = False
        try:
            added, keep = await self._add(name, path, incoming, index, sequence)
            return added
        finally:
            if not keep:  # what was refused, or its folder once the file is in place
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(shutil.rmtree, incoming.parent, True)

    async def _add(self, name: str, path: str, incoming: pathlib.Path, index: int | None, sequence: int | None) -> tuple[Added, bool]:
        peer = self.peer
        folder = self.writes.folder / "sets" / name

        def target() -> pathlib.Path:
            folder.mkdir(parents=True, exist_ok=True)
            return safe_target(folder, path)  # before anything is published: a path that cannot be kept is refused here

        final = await trio.to_thread.run_sync(target)
        manifest = await trio.to_thread.run_sync(build_manifest, incoming, peer.config.chunk_size)
        signature = await trio.to_thread.run_sync(file_signature, incoming)
        if signature is None:
            raise StorageError(f"{incoming}: vanished before it was published")
        ours = self._serve(incoming, manifest, signature)
        try:
            async with self._locks.setdefault(name, trio.Lock()):
                added = await self._publish(name, path, manifest, signature[1], index, sequence)
                peer.forget(final, keep=manifest.file_id)  # what was there before is not this node's to serve any more
                try:
                    await trio.to_thread.run_sync(os.replace, incoming, final)
                except OSError as exc:  # published, but not moved into place: served from where it is until a restart
                    logger.error("%s: %s stays in %s (%s): it is served until the gateway stops", peer.name, path, incoming, exc)
                    return added, True
                if ours is not None:
                    ours.path = final  # the same file (a rename keeps its descriptor and signature)
        except BaseException:
            if ours is not None and ours.path == incoming and peer.library.get(manifest.file_id) is ours:
                peer.library.remove(manifest.file_id)  # refused: not served (a WITHDRAW tells the tracker, if it heard of it)
            raise
        if ours is None and peer.library.get(manifest.file_id) is None:
            peer.library.add(open_published(final, manifest, signature))
        return added, False

    def _serve(self, incoming: pathlib.Path, manifest: Manifest, signature: tuple[int, int]) -> HeldFile | None:
        """Serve ``incoming`` from now (the tracker hears of it next); None if a complete copy is served already."""
        held = self.peer.library.get(manifest.file_id)
        if held is not None and not held.withdrawn and held.have.complete:
            return None
        ours = open_published(incoming, manifest, signature)
        self.peer.library.add(ours)
        return ours

    async def precheck(self, name: str, path: str, index: int | None, sequence: int | None) -> None:
        """The checks of a POST that need no body (owner, sequence, index), before a byte of it is read; made again under the lock."""
        self._plan(await self.versions.current(name, missing_ok=True), name, path, index, sequence)

    def _plan(self, current: CollectionVersion | None, name: str, path: str, index: int | None,
              sequence: int | None) -> tuple[int, Entry | None]:  # fmt: skip
        """PATH's index in the next version and the entry it replaces; NotAnOwner, CollectionConflict or IndexConflict."""
        key = self.peer.config.node_key
        at = current.sequence if current is not None else 0
        if current is not None and key.public_key not in current.owners:
            raise NotAnOwner(f"this node ({short_id(key.node_id)}) is not an owner of set {name!r}: an owner can add it with: "
                             f"chunkswarm collection allow {name} {key.public_key.hex()}")  # fmt: skip
        if sequence is not None and sequence != at:
            raise CollectionConflict(f"set {name!r} is at version {at}, not {sequence}: look at it again", at)
        found = current.entry(path) if current is not None else None
        entries = current.entries if current is not None else ()
        position = found[0] if found is not None else bisect.bisect_left([entry.path for entry in entries], path)
        if index is not None and index != position:
            what = "is" if found is not None else "would be"
            raise IndexConflict(f"{path!r} {what} entry {position} of set {name!r} version {at}, not {index}", position, at)
        return position, found[1] if found is not None else None

    async def _publish(self, name: str, path: str, manifest: Manifest, mtime_ns: int, index: int | None, sequence: int | None) -> Added:
        peer, key = self.peer, self.peer.config.node_key
        current = await self.versions.current(name, missing_ok=True)
        at = current.sequence if current is not None else 0
        position, before = self._plan(current, name, path, index, sequence)
        entries = list(current.entries) if current is not None else []
        node = key.node_id[:8]
        changed = before is None or before.deleted or (before.file_id, before.size) != (manifest.file_id, manifest.size)
        messages: list[Message] = [Publish(manifest), Announce(manifest.file_id, ChunkSet.full(manifest.chunk_count).ranges())]
        version = current
        if changed:
            entry = Entry(path, manifest.size, manifest.file_id, _MODE, mtime_ns or time.time_ns(),
                          version=vv_bump(before.version if before is not None else (), node), modified_by=node)  # fmt: skip
            if before is not None:
                entries[position] = entry
            else:
                entries.insert(position, entry)
            version = sign_version(key, name, at + 1, current.root if current is not None else ZERO_HASH, entries,
                                   current.owners if current is not None else (key.public_key,))  # fmt: skip
            messages.append(PublishCollection(version))
        assert version is not None
        link = await peer.tracker.link()
        replies = await link.request_many(messages, timeout=peer.config.tracker_timeout)
        check_reply(replies[0], Published)
        check_reply(replies[1], Ok)
        if changed:
            reply = replies[2]
            if isinstance(reply, Error) and reply.code == ErrorCode.NOT_AN_OWNER:
                raise NotAnOwner(f"the tracker refused version {version.sequence} of set {name!r}: {reply.message}")
            check_publish_reply(reply, version)
            self.versions.note(version)
            logger.info("%s: set %r version %d (root %s): %s %s over HTTP", peer.name, name, version.sequence,
                        version.root.hex()[:16], "replaced" if before is not None else "added", path)  # fmt: skip
        return Added(version, position, created=before is None, changed=changed)

    async def restore(self) -> None:
        """At start: drop bodies a stopped gateway left half-received, and serve the files POSTed before (published at REGISTER)."""
        folder = self.writes.folder
        await trio.to_thread.run_sync(shutil.rmtree, folder / "incoming", True)
        sets = folder / "sets"
        if await trio.to_thread.run_sync(sets.is_dir):
            try:
                await self.peer.publish([sets])
            except ChunkswarmError as exc:
                logger.warning("%s: the files POSTed into sets before (%s) are not served: %s", self.peer.name, sets, exc)


def check_upload_path(path: str | None) -> str:
    """PATH of a POST, checked as every entry's path is (400)."""
    if path is None:
        raise ValidationError("a POST names the file's path in the set: ?path=PATH (relative, '/' between folders)")
    return check_path(path)
