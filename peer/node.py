"""The programmatic face of a peer: :func:`open_peer` yields a :class:`Peer`.

::

    async with open_peer(PeerConfig(state_dir=..., label="peer-1")) as peer:
        await peer.connect()
        await peer.publish(["some/dir"])
        result = await peer.download("file.txt", out_dir)

The chunk server is listening as soon as the context is entered; the tracker
is contacted by :meth:`Peer.connect`. Leaving the context deregisters
(bounded by ``shutdown_timeout``) and closes everything. Meanwhile the files
served are watched, and the tracker is told of those no longer served
(``peer.withdrawals``).
"""

from __future__ import annotations

import logging
import os
import pathlib
import string
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import attrs
import trio

from common.capabilities import COLLECTIONS, GATEWAY, LOOKUP, UNPUBLISH, WITHDRAW
from common.chunkset import ChunkSet
from common.errors import ChunkswarmError, ConnectionClosed, IntegrityError, PeerTimeout, TrackerUnavailable, ValidationError
from common.manifest import Manifest, check_publishable_name, shown_name
from common.messages import (
    Announce,
    FileEntry,
    FileList,
    GetManifest,
    Hello,
    ManifestReply,
    Message,
    Ok,
    Publish,
    Published,
    Register,
    Withdraw,
)
from common.wording import format_size, plural
from peer.catalogue import agent, list_request, lookup_request, resolve_entry
from peer.config import PeerConfig
from peer.download import Downloader
from peer.progress import DownloadResult, ProgressSink
from peer.secure import CAPABILITIES, Private
from peer.server import ChunkServer
from peer.slots import Choker, Reciprocity
from peer.status import PeerStatus, Transfers
from peer.storage.library import Library, expand_paths, open_published
from peer.storage.manifest_cache import ManifestCache
from peer.tasks import open_nursery
from peer.tracker_client import TrackerClient, TrackerLink, check_reply
from peer.withdrawals import Withdrawals

__all__ = ["open_peer", "Peer"]

logger = logging.getLogger(__name__)

_HEX = frozenset(string.hexdigits)

#: Seconds between hashing progress reports while publishing.
HASH_REPORT_INTERVAL = 0.1


class _ByteCounter:
    """Bytes hashed so far: added to by one worker thread, read by trio tasks."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, nbytes: int) -> None:
        self.total += nbytes  # one writer; readers see an int, old or new


async def _report_hashing(counter: _ByteCounter, hashing: Callable[[str, int, int], None], name: str, size: int) -> None:
    reported = 0
    while True:
        await trio.sleep(HASH_REPORT_INTERVAL)
        if counter.total != reported:
            reported = counter.total
            hashing(name, size, reported)


@attrs.define(eq=False)
class Peer:
    """A running peer; create it with :func:`open_peer`."""

    config: PeerConfig
    nursery: trio.Nursery
    peer_id: bytes
    library: Library = attrs.field(factory=Library)
    transfers: Transfers = attrs.field(factory=Transfers)
    listen_address: tuple[str, int] = ("", 0)
    _server: ChunkServer | None = attrs.field(init=False, default=None)
    _tracker: TrackerClient | None = attrs.field(init=False, default=None)
    _cache: ManifestCache = attrs.field(init=False)
    _withdrawals: Withdrawals | None = attrs.field(init=False, default=None)
    _downloads: list[str] = attrs.field(init=False, factory=list)
    #: The private swarm this peer is in (``peer/secure.py``), or None.
    _private: Private | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._cache = ManifestCache(self.config.state_dir / "manifests")

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def connected(self) -> bool:
        return self._tracker is not None and self._tracker.connected

    @property
    def hello(self) -> Hello:
        offered = CAPABILITIES if self.config.swarm is not None else {}
        return Hello(self.peer_id, listen_port=self.listen_address[1], agent=agent(self.config), capabilities=offered)

    async def _start(self) -> None:
        config = self.config
        self._private = private = None if config.swarm is None else Private.create(config.swarm, config.node_key)
        self._server = ChunkServer(
            self.library,
            self.peer_id,
            private=private,
            allow=config.allow,
            label=config.label,
            max_connections=config.max_upload_connections,
            max_connections_per_ip=config.max_upload_connections_per_ip,
            max_queued=config.max_queued_requests,
            transfers=self.transfers,
            upload_rate=config.max_upload_rate,
            key=config.node_key,
            choker=Choker(config.upload_slots, config.optimistic_interval),
        )
        self.listen_address = await self.nursery.start(self._server.serve, config.listen_host, config.listen_port)
        self._tracker = TrackerClient(
            config.tracker,
            # Only the tracker is offered withdraw, unpublish, lookup and gateway: chunk servers have no use for
            # them. Identity is offered to both (key=); a chunk server of protocol 1 refuses a
            # HELLO that offers anything, and is greeted again without (peer/greeting.py).
            attrs.evolve(self.hello, capabilities={**dict(self.hello.capabilities), WITHDRAW: 1, UNPUBLISH: 1, LOOKUP: 1, GATEWAY: 1,
                                                                    COLLECTIONS: 1}),
            self.listen_address[1],
            self.nursery,
            self._on_connected,
            timeout=config.tracker_timeout,
            min_delay=config.reconnect_min_delay,
            max_delay=config.reconnect_max_delay,
            key=config.node_key,
            private=private,
            fallbacks=config.fallback_trackers,
        )
        self._withdrawals = withdrawals = Withdrawals(self.library, self._tracker, config.change_check_interval)
        self.library.on_withdraw = withdrawals.note
        self.nursery.start_soon(withdrawals.run)
        self.nursery.start_soon(withdrawals.sweep)

    @property
    def private(self) -> Private | None:
        """The private swarm this peer is in (TLS and the proof on every connection it opens), or None."""
        return self._private

    @property
    def tracker(self) -> TrackerClient:
        assert self._tracker is not None
        return self._tracker

    # -- tracker membership ----------------------------------------------------
    async def connect(self, *, retry: bool = False) -> None:
        """HELLO + REGISTER; then heartbeats and automatic reconnection in the background.

        With ``retry`` an unreachable tracker is no error: it is tried again in the
        background (with backoff) and everything held is published once it answers.
        """
        await self.tracker.connect(retry=retry)
        if self.connected:
            logger.debug("%s connected to the tracker at %s:%d", self.name, *self.config.tracker)

    async def set_http_port(self, port: int) -> None:
        """Tell the tracker this peer's HTTP gateway port (PROTOCOL.md §8.10): with every REGISTER from now on, and now if connected."""
        tracker = self.tracker
        tracker.http_port = port
        if tracker.connected and tracker.speaks(GATEWAY):
            await tracker.request(Register(self.listen_address[1], port), Ok)

    async def disconnect(self) -> None:
        """DEREGISTER and stop heartbeating; :meth:`connect` works again later."""
        await self.tracker.disconnect(timeout=self.config.shutdown_timeout)

    async def _on_connected(self, link: TrackerLink) -> None:
        # After a (re)connection: the tracker may have forgotten us (or everything): tell it again.
        messages: list[Message] = []
        for held in list(self.library.files.values()):
            if held.withdrawn or (not held.have.mask and held.manifest.chunk_count):
                continue
            messages.append(Publish(held.manifest))
            messages.append(Announce(held.manifest.file_id, held.have.ranges()))
        # What stopped being served while the link was down: the tracker may have kept our
        # registration (and the replicas) over the reconnection.
        assert self._withdrawals is not None
        if link.speaks(WITHDRAW):
            messages += self._withdrawals.take()
        else:
            self._withdrawals.forget()
        if messages:
            replies = await link.request_many(messages, timeout=self.config.tracker_timeout)
            for message, reply in zip(messages, replies, strict=True):
                # A WITHDRAW refused is nothing to worry about: the tracker lists no such file (a new tracker, say).
                if not isinstance(reply, (Ok, Published)) and not isinstance(message, Withdraw):
                    logger.warning("%s: %s after reconnection: %s", self.name, message.OPCODE.name, reply)

    # -- publishing --------------------------------------------------------------
    async def publish(self, paths: Iterable[os.PathLike[str] | str], *, progress: ProgressSink | None = None) -> list[Manifest]:
        """Hash (or take from the cache), serve, PUBLISH and ANNOUNCE every file under ``paths``."""
        files = await trio.to_thread.run_sync(lambda: expand_paths(paths))
        manifests = []
        for path in files:
            try:
                check_publishable_name(path.name)  # the tracker would refuse it: say so, naming the file, before hashing it
            except ValidationError as exc:
                raise ValidationError(f"cannot publish {shown_name(str(path))}: {exc}") from None
            manifest, signature, cached = await self._manifest_for(path, progress)
            logger.info("%s: %s %s (%s, %s, id %s)", self.name, "publishing" if not cached else "publishing (cached manifest)",
                        path, format_size(manifest.size), plural(manifest.chunk_count, "chunk"), manifest.hex_id[:16])
            self.forget(path, keep=manifest.file_id)  # an earlier version of this file is not served any more
            self.library.add(open_published(path, manifest, signature))
            if self.connected:
                try:
                    replies = await self.tracker.request_many(
                        [Publish(manifest), Announce(manifest.file_id, ChunkSet.full(manifest.chunk_count).ranges())]
                    )
                except (TrackerUnavailable, ConnectionClosed, PeerTimeout) as exc:
                    # Held and served already; a reconnection publishes everything held (_on_connected).
                    logger.warning("%s: %s is not on the tracker yet (%s); it will be once the tracker answers", self.name, path.name, exc)
                else:
                    check_reply(replies[0], Published)
                    check_reply(replies[1], Ok)
            manifests.append(manifest)
        return manifests

    async def hold(self, path: pathlib.Path) -> Manifest:
        """Hash (or take from the cache) and serve ``path`` without a word to the tracker: the caller publishes it, in a batch."""
        manifest, signature, _ = await self._manifest_for(path, None)
        self.forget(path, keep=manifest.file_id)
        self.library.add(open_published(path, manifest, signature))
        return manifest

    def forget(self, path: pathlib.Path, *, keep: bytes | None = None) -> list[Manifest]:
        """Stop serving the published file at ``path`` (every version of it but ``keep``); the manifests dropped."""
        where = path.absolute()
        dropped = [held.manifest for held in list(self.library.files.values())
                   if held.path.absolute() == where and held.manifest.file_id != keep]  # fmt: skip
        for manifest in dropped:
            self.library.remove(manifest.file_id)
        return dropped

    async def _manifest_for(self, path: pathlib.Path, progress: ProgressSink | None) -> tuple[Manifest, tuple[int, int], bool]:
        """The cached or freshly hashed manifest of ``path``, reporting hashing progress to ``progress``."""
        chunk_size = self.config.chunk_size
        hashing = getattr(progress, "hashing", None)
        if progress is None or hashing is None:
            result = await trio.to_thread.run_sync(self._cache.manifest_for, path, chunk_size)
            if progress is not None:
                manifest = result[0]
                progress.started(manifest.name, manifest.size, manifest.size)
                progress.finished()
            return result
        name, size = path.name, (await trio.to_thread.run_sync(path.stat)).st_size
        counter = _ByteCounter()
        async with open_nursery() as nursery:
            # The worker thread only adds to a counter; this task reports it, so a
            # 1 MiB chunk costs no round trip to the event loop.
            nursery.start_soon(_report_hashing, counter, hashing, name, size)
            try:
                result = await trio.to_thread.run_sync(self._cache.manifest_for, path, chunk_size, counter.add)
            finally:
                nursery.cancel_scope.cancel()
        if counter.total:  # not for a cached manifest
            hashing(name, size, counter.total)
            progress.finished()
        return result

    # -- catalogue -----------------------------------------------------------------
    async def list_files(self, pattern: str = "") -> list[FileEntry]:
        reply = await self.tracker.request(list_request(pattern), FileList)
        return list(reply.entries)

    async def resolve(self, query: str) -> FileEntry:
        """The file ``query`` names: a file id or id prefix (hex), or an exact name (:func:`~peer.catalogue.resolve_entry`).

        Asked of the tracker (LOOKUP, PROTOCOL.md §8.6) when it speaks ``lookup``:
        the whole listing of a large catalogue would not even fit one frame.
        """
        if not self.tracker.speaks(LOOKUP):
            return resolve_entry(query, await self.list_files(""))
        request = lookup_request(query)
        if request is None:
            return resolve_entry(query, [])  # names no file: says why
        reply = await self.tracker.request(request, FileList)
        return resolve_entry(query, list(reply.entries))

    async def get_manifest(self, file_id: bytes) -> Manifest:
        reply = await self.tracker.request(GetManifest(file_id), ManifestReply)
        manifest = reply.manifest
        if manifest.file_id != file_id:
            raise IntegrityError(f"the tracker sent the manifest of {manifest.hex_id[:16]} for {file_id.hex()[:16]}")
        manifest.verify()
        return manifest

    # -- downloading ----------------------------------------------------------------
    async def download(
        self, query: str, out_dir: os.PathLike[str] | str, *, force: bool = False, progress: ProgressSink | None = None,
        save_as: str = "",
    ) -> DownloadResult:
        """Download the file ``query`` names into ``out_dir`` (as ``save_as``, if given); afterwards the peer serves it."""
        entry = await self.resolve(query)
        manifest = await self.get_manifest(entry.file_id)
        downloader = Downloader(
            self.config,
            manifest,
            pathlib.Path(out_dir),
            self.tracker,
            self.library,
            self.transfers,
            self.hello,
            self.peer_id,
            private=self._private,
            force=force,
            progress=progress,
            save_as=save_as,
            reciprocity=self._server.choker.reciprocity if self._server is not None else Reciprocity(),
        )
        self._downloads.append(manifest.name)
        try:
            return await downloader.run()
        finally:
            self._downloads.remove(manifest.name)

    # -- status ---------------------------------------------------------------------
    def status(self) -> PeerStatus:
        files = tuple(
            (held.manifest.name, held.manifest.hex_id, len(held.have), held.manifest.chunk_count)
            for held in self.library.files.values()
            if not held.withdrawn
        )
        return PeerStatus(
            label=self.label,
            peer_id=self.peer_id,
            connected=self.connected,
            tracker=self.config.tracker,
            listen_address=self.listen_address,
            files=files,
            active_downloads=tuple(self._downloads),
            upload_connections=self._server.active if self._server is not None else 0,
            uploaded=dict(self.transfers.uploaded),
            downloaded=dict(self.transfers.downloaded),
        )


@asynccontextmanager
async def open_peer(config: PeerConfig) -> AsyncIterator[Peer]:
    """A peer whose chunk server is listening; not yet connected to the tracker."""
    peer_id = config.node_key.peer_id  # PROTOCOL.md §8.6: an identified node's peer id is its key's
    library = Library()
    try:
        async with open_nursery() as nursery:
            peer = Peer(config, nursery, peer_id, library)
            await peer._start()
            logger.debug("%s serving on %s:%d", peer.name, *peer.listen_address)
            try:
                yield peer
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(config.shutdown_timeout):
                    try:
                        await peer.disconnect()
                    except ChunkswarmError as exc:
                        logger.debug("%s: leaving the tracker: %s", peer.name, exc)
                nursery.cancel_scope.cancel()
    finally:
        library.close()
