"""The download task tree: one file from many peers at once.

::

    Downloader.run
    ├── refresher     WHO_HAS every refresh_interval (or when peers run out); starts sessions; stall detection
    ├── announcer     ANNOUNCE verified chunks in batches (at most announce_delay late)
    ├── state saver   writes the resume state (after the pwrite of every chunk it lists)
    ├── session x N   one connection per holder:
    │   ├── requester     keeps up to pipeline_depth REQUEST_CHUNKs in flight (the picker chooses)
    │   └── receiver      CHUNK_DATA -> verifier task; CHUNK_ERROR -> back to the picker
    └── verifier x M  SHA-256 + pwrite in a worker thread; then announce, serve, log, cancel endgame duplicates

Scheduling decisions are the pure :class:`~peer.picker.Picker`'s; this module
only does I/O and time. Every verified chunk is added to the
:class:`~peer.storage.library.HeldFile` in the library at once, so the chunk server
serves it to other downloaders while this download goes on.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from common.chunkset import ChunkSet
from common.codec import Codec, chunk_data_body_size
from common.errors import (
    ChunkswarmError,
    ConnectionClosed,
    IntegrityError,
    NoHolders,
    PeerTimeout,
    ProtocolError,
    StorageError,
    TrackerError,
    TrackerUnavailable,
    ValidationError,
)
from common.framing import ErrorCode
from common.manifest import Manifest
from common.messages import (
    Announce,
    CancelChunk,
    ChunkData,
    ChunkError,
    Error,
    Hello,
    Holders,
    Ok,
    RequestChunk,
    Welcome,
    WhoHas,
)
from peer.buffers import BufferPool
from peer.config import PeerConfig
from peer.connection import Connection
from peer.picker import Picker
from peer.progress import DownloadResult, ProgressSink
from peer.status import TransferCount, Transfers, describe_remote
from peer.storage.chunk_io import Buffer, direct_aligned, hash_chunks, verify_and_write
from peer.storage.library import HeldFile, Library, open_published
from peer.storage.part_file import PartFile, place_file, same_content
from peer.storage.read_back import ReadBack
from peer.tasks import open_nursery
from peer.tracker_client import TrackerClient

__all__ = ["Downloader"]

logger = logging.getLogger(__name__)

#: The shortest time between two holder refreshes of one download.
_MIN_REFRESH_GAP = 0.1
#: Past this many remembered failed holders, those whose retry delay is over are forgotten.
_MAX_RETRY_ENTRIES = 1000


class _PeerBusy(ChunkswarmError):
    pass


@attrs.define(eq=False)
class _Source:
    peer_id: bytes
    address: tuple[str, int]
    name: str
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    conn: Connection | None = None
    pause_until: float = 0.0
    #: Set when this session may have something new to request.
    wakeup: trio.Event = attrs.field(factory=trio.Event)
    #: When this peer must have answered: ``request_timeout`` after our last request
    #: or its last answer. Frames that answer nothing do not move it.
    answer_due: float = 0.0
    #: The receiver's wait for the next frame, whose deadline is ``answer_due``.
    answer_wait: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def wake(self) -> None:
        self.wakeup.set()

    def expect_answer(self, within: float) -> None:
        """This peer has ``within`` seconds from now to answer."""
        self.answer_due = self.answer_wait.deadline = trio.current_time() + within


@attrs.define(eq=False)
class Downloader:
    """Downloads ``manifest`` into ``out_dir`` from the swarm; see the module docstring."""

    config: PeerConfig
    manifest: Manifest
    out_dir: pathlib.Path
    tracker: TrackerClient
    library: Library
    transfers: Transfers
    hello: Hello
    peer_id: bytes
    force: bool = False
    progress: ProgressSink | None = None

    _picker: Picker[bytes] = attrs.field(init=False)
    _part: PartFile = attrs.field(init=False)
    _held: HeldFile = attrs.field(init=False)
    _sources: dict[bytes, _Source] = attrs.field(init=False, factory=dict)
    _retry_after: dict[bytes, float] = attrs.field(init=False, factory=dict)
    _refresh_now: trio.Event = attrs.field(init=False, factory=trio.Event)
    #: When the last chunk was verified (or the swarm joined): see ``_refresher``.
    _progress_at: float = attrs.field(init=False, factory=time.monotonic)
    _done: trio.Event = attrs.field(init=False, factory=trio.Event)
    _to_announce: ChunkSet = attrs.field(init=False)
    _announce_due: trio.Event = attrs.field(init=False, factory=trio.Event)
    _state_due: trio.Event = attrs.field(init=False, factory=trio.Event)
    _io_limiter: trio.CapacityLimiter = attrs.field(init=False)
    _verify_slots: trio.Semaphore = attrs.field(init=False)
    _received: dict[str, TransferCount] = attrs.field(init=False, factory=dict)
    _bad_chunks: int = attrs.field(init=False, default=0)
    _nursery: trio.Nursery | None = attrs.field(init=False, default=None)
    _read_back: ReadBack = attrs.field(init=False)
    _buffers: BufferPool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        count = self.manifest.chunk_count
        self._picker = Picker(
            count,
            max_in_flight=self.config.pipeline_depth,
            ban_threshold=self.config.ban_threshold,
            endgame_copies=self.config.endgame_copies,
        )
        self._part = PartFile(self.manifest, self.out_dir / self.manifest.name, direct_io=self.config.direct_io)
        self._to_announce = ChunkSet(count)
        self._io_limiter = trio.CapacityLimiter(self.config.io_threads)
        self._verify_slots = trio.Semaphore(max(4, 3 * self.config.io_threads))
        self._buffers = BufferPool(chunk_data_body_size(self.manifest.chunk_size))

    @property
    def final_path(self) -> pathlib.Path:
        return self._part.final_path

    @property
    def _label(self) -> str:
        return self.config.name

    # -- the whole download ----------------------------------------------------
    async def run(self) -> DownloadResult:
        started = time.monotonic()
        manifest = self.manifest
        manifest.verify()  # the manifest against the file id, before trusting any chunk hash
        final = self.final_path
        if final.exists():
            if await trio.to_thread.run_sync(same_content, final, manifest):
                logger.info("%s is already complete at %s", manifest.name, final)
                self._serve_final(final)
                return self._result(started, resumed=manifest.chunk_count, already=True)
            if not self.force:
                raise StorageError(f"{final} already exists with other content (use --force to overwrite it)")
        claimed = await trio.to_thread.run_sync(self._part.open)
        resumed = await self._verify_on_disk(claimed) if claimed else []
        if claimed:
            lost = len(claimed) - len(resumed)
            logger.info("resuming %s: %d of %d chunks already verified%s", manifest.name, len(resumed), manifest.chunk_count,
                        f" ({lost} listed chunks failed re-verification)" if lost else "")
        self._picker.mark_have(resumed)
        self._held = HeldFile(manifest, self._part.path, self._part.fd, ChunkSet.from_indexes(manifest.chunk_count, resumed),
                              direct_fd=self._part.direct_fd)
        self._part.fd = self._part.direct_fd = -1  # the library's HeldFile owns the descriptors now
        self._read_back = ReadBack(manifest, self._held.fd, self.config.read_back_window, self._held.direct_fd, self._buffers.give_back)
        self.library.add(self._held)
        if self.progress is not None:
            self.progress.started(manifest.name, manifest.size, sum(manifest.chunk_length(i) for i in resumed))
        try:
            if not self._picker.complete:
                self._to_announce.update(self._held.have)
                await self._swarm()
            await self._flush_announce()
            await self._finish()
        except BaseException:
            self.library.remove(manifest.file_id)
            with trio.CancelScope(shield=True), trio.move_on_after(self.config.shutdown_timeout):
                await trio.to_thread.run_sync(self._part.save_state, self._held.have.copy())
            raise
        if self.progress is not None:
            self.progress.finished()
        return self._result(started, resumed=len(resumed))

    def _result(self, started: float, *, resumed: int, already: bool = False) -> DownloadResult:
        return DownloadResult(
            path=self.final_path,
            manifest=self.manifest,
            received=dict(self._received),
            chunks_received=sum(c.chunks for c in self._received.values()),
            chunks_resumed=resumed,
            chunks_refetched=self._picker.refetched,
            bad_chunks=self._bad_chunks,
            seconds=time.monotonic() - started,
            already_complete=already,
        )

    async def _verify_on_disk(self, indexes: list[int]) -> list[int]:
        """Hash ``indexes`` of the part file in worker threads (in parallel); the ones that match."""
        fd, direct_fd = self._part.fd, self._part.direct_fd
        good: list[int] = []

        async def one(part: int, parts: int) -> None:
            good.extend(await trio.to_thread.run_sync(hash_chunks, self.manifest, fd, indexes[part::parts], direct_fd))

        await self._in_parallel(one)
        return sorted(good)

    async def _in_parallel(self, job: Callable[[int, int], Awaitable[None]]) -> None:
        # Twice the I/O threads: while half wait for the device (reads past the page cache are
        # not read ahead), the other half hash.
        parts = max(1, 2 * self.config.io_threads)
        async with open_nursery() as nursery:
            for part in range(parts):
                nursery.start_soon(job, part, parts)

    async def _finish(self) -> None:
        """Check that every chunk on disk matches the manifest, then move the file into place.

        Chunks resumed were hashed from disk when the download started, and
        the others read back as the download went on (:class:`ReadBack`):
        only the last few are left to read back here.
        """
        manifest = self.manifest
        checking = time.monotonic()
        bad: list[int] = []

        async def one(part: int, parts: int) -> None:
            bad.extend(await trio.to_thread.run_sync(self._read_back.finish, part, parts))

        await self._in_parallel(one)
        self._read_back.close()
        logger.debug("%s: final read-back of %s took %.2f s", self._label, manifest.name, time.monotonic() - checking)
        if bad:
            bad.sort()
            for index in bad:
                self._held.have.discard(index)
            raise IntegrityError(f"{manifest.name}: {len(bad)} chunks changed on disk after verification; run get again")
        await trio.to_thread.run_sync(lambda: place_file(self._part.path, self.final_path, manifest, force=self.force))
        self._part.discard_state()
        self._serve_final(self.final_path)
        logger.info("%s complete: %s (%d endgame duplicates, %d chunks re-fetched, %d bad)", manifest.name, self.final_path,
                    self._picker.duplicates, self._picker.refetched, self._bad_chunks)

    def _serve_final(self, final: pathlib.Path) -> None:
        held = self.library.get(self.manifest.file_id)
        st = os.stat(final)
        if held is None or held.path != self._part.path:
            self.library.add(open_published(final, self.manifest, (st.st_size, st.st_mtime_ns)))
            return
        held.path = final
        held.signature = (st.st_size, st.st_mtime_ns)

    # -- the swarm ---------------------------------------------------------------
    async def _swarm(self) -> None:
        async with open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._refresher)
            nursery.start_soon(self._announcer)
            nursery.start_soon(self._state_saver)
            await self._done.wait()
            nursery.cancel_scope.cancel()
        self._nursery = None
        await trio.to_thread.run_sync(self._part.save_state, self._held.have.copy())

    async def _refresher(self) -> None:
        stalled_since: float | None = None
        config = self.config
        self._progress_at = time.monotonic()
        while True:
            try:
                holders = await self.tracker.request(WhoHas(self.manifest.file_id, max_peers=50), Holders)
                self._apply_holders(holders)
            except (TrackerUnavailable, TrackerError, PeerTimeout, ConnectionClosed, ProtocolError) as exc:
                logger.debug("%s: holder refresh failed: %s", self._label, exc)
            picker = self._picker
            now = time.monotonic()
            if picker.in_flight_total == 0 and picker.verifying_count == 0 and not self._connecting():
                stalled_since = stalled_since if stalled_since is not None else now
                if now - stalled_since >= config.stall_timeout:
                    self._give_up()
            else:
                stalled_since = None
            # Requests in flight keep the download alive only while chunks come: an honest
            # peer answers within request_timeout, so holders that take requests and never
            # answer (or are reconnected to, again and again) cannot hold it up for ever.
            if now - self._progress_at >= config.stall_timeout + config.request_timeout:
                self._give_up()
            self._refresh_now = trio.Event()
            with trio.move_on_after(config.refresh_interval):
                await self._refresh_now.wait()
            # At most so often, however many sessions end: holders that refuse every
            # connection must not turn this into a loop of WHO_HAS.
            await trio.sleep(_MIN_REFRESH_GAP)

    def _connecting(self) -> bool:
        # A first attempt to reach a holder holds off the stall timer; a retry of one that
        # already failed does not: the tracker lists a SIGKILLed holder until its peer
        # timeout, and retrying it every peer_retry_delay must not keep the download alive.
        return any(source.conn is None and source.peer_id not in self._retry_after for source in self._sources.values())

    def _give_up(self) -> None:
        missing = tuple(self._picker.unavailable()) or tuple(self._picker.have.missing())
        shown = ", ".join(str(i + 1) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise NoHolders(
            f"no reachable peer holds {len(missing)} chunk(s) of {self.manifest.name} (chunks {shown}); "
            f"the partial download is kept in {self._part.path}: run get again to resume",
            missing,
        )

    def _apply_holders(self, holders: Holders) -> None:
        count = self.manifest.chunk_count
        missing = ~self._picker.have.mask & ((1 << count) - 1)
        now = time.monotonic()
        if len(self._retry_after) > _MAX_RETRY_ENTRIES:  # a tracker can list endless new ids
            self._retry_after = {peer: due for peer, due in self._retry_after.items() if due > now}
        for holder in holders.holders:
            if holder.peer_id == self.peer_id or self._picker.is_banned(holder.peer_id):
                continue
            try:
                chunks = ChunkSet.from_bitfield(count, holder.bitfield)
            except ValidationError:
                continue
            source = self._sources.get(holder.peer_id)
            if source is not None:
                self._picker.set_peer_chunks(holder.peer_id, chunks)
                continue
            if len(self._sources) >= self.config.max_download_peers or not chunks.mask & missing:
                continue
            if self._retry_after.get(holder.peer_id, 0.0) > now:
                continue
            address = (holder.host, holder.port)
            source = _Source(holder.peer_id, address, describe_remote("", address))
            self._sources[holder.peer_id] = source
            self._picker.set_peer_chunks(holder.peer_id, chunks)
            assert self._nursery is not None
            self._nursery.start_soon(self._session, source)
        self._report_peers()
        self._wake_all()

    def _report_peers(self) -> None:
        # ``peers`` is optional for a progress sink: a sink with just started/chunk/finished works.
        report = getattr(self.progress, "peers", None)
        if report is not None:
            report(len(self._sources))

    def _wake_all(self) -> None:
        for source in self._sources.values():
            source.wake()

    # -- one source peer -----------------------------------------------------------
    async def _session(self, source: _Source) -> None:
        key = source.peer_id
        try:
            with source.scope:
                try:
                    await self._run_session(source)
                except _PeerBusy as exc:
                    logger.debug("%s: %s is busy: %s", self._label, source.name, exc)
                except (ConnectionClosed, PeerTimeout, ProtocolError, OSError, trio.TooSlowError) as exc:
                    logger.info("%s: dropping %s: %s", self._label, source.name, exc or type(exc).__name__)
            if self._picker.is_banned(key):
                logger.warning("%s: banned %s for sending bad data", self._label, source.name)
        finally:
            self._sources.pop(key, None)
            self._picker.remove_peer(key)
            self._retry_after[key] = time.monotonic() + self.config.peer_retry_delay
            self._wake_all()
            self._refresh_now.set()
            self._report_peers()
            if source.conn is not None:
                await source.conn.aclose()

    async def _run_session(self, source: _Source) -> None:
        with trio.fail_after(self.config.connect_timeout):
            stream = await trio.open_tcp_stream(*source.address)
            # Nothing a serving peer sends is larger than one chunk: a header that claims more is
            # refused before anything is buffered (a liar could otherwise make us hold 16 MiB).
            codec = Codec(max_receive_size=max(16 * 1024, self.manifest.chunk_size + 64), allocate_body=self._buffers.take)
            conn = Connection(stream, codec=codec)
            source.conn = conn
            await conn.send(self.hello)
            welcome = await conn.receive()
        if isinstance(welcome, Error):
            if welcome.code in (ErrorCode.BUSY, ErrorCode.TOO_MANY_CONNECTIONS):
                raise _PeerBusy(welcome.message)
            raise ConnectionClosed(f"refused: {welcome.message}")
        if not isinstance(welcome, Welcome):
            raise ConnectionClosed(f"answered HELLO with {type(welcome).__name__}")
        source.name = describe_remote(welcome.agent, source.address)
        logger.debug("%s: connected to %s", self._label, source.name)
        async with open_nursery() as nursery:
            nursery.start_soon(self._requester, source, conn)
            await self._receiver(source, conn)

    async def _requester(self, source: _Source, conn: Connection) -> None:
        file_id = self.manifest.file_id
        key = source.peer_id
        while True:
            pause = source.pause_until - time.monotonic()
            if pause > 0:
                await trio.sleep(pause)
            # A fresh event before picking: whatever changes after this pick wakes us.
            source.wakeup = trio.Event()
            waiting = bool(self._picker.in_flight(key))
            indexes = self._picker.pick_many(key)
            if indexes:
                try:
                    with trio.fail_after(self.config.request_timeout):  # a peer that takes no requests is dropped
                        await conn.send_many([RequestChunk(file_id, i) for i in indexes])
                except trio.TooSlowError:
                    raise PeerTimeout(f"took no request within {self.config.request_timeout:g} s") from None
                if not waiting:  # the clock starts at the first request it owes us
                    source.expect_answer(self.config.request_timeout)
                continue
            if not self._picker.in_flight(key) and key not in self._picker.useful_peers():
                self._refresh_now.set()
            await source.wakeup.wait()

    async def _receiver(self, source: _Source, conn: Connection) -> None:
        key = source.peer_id
        picker = self._picker
        manifest = self.manifest
        assert self._nursery is not None
        timeout = self.config.request_timeout
        source.expect_answer(timeout)
        while True:
            # Only an answer moves the deadline on, so a peer that sends anything
            # but answers cannot keep our requests in flight forever.
            with trio.CancelScope(deadline=source.answer_due) as source.answer_wait:
                message = await conn.receive()
            if source.answer_wait.cancelled_caught:
                if picker.in_flight(key):
                    raise PeerTimeout(f"no answer within {timeout:g} s")
                source.expect_answer(timeout)
                continue
            if isinstance(message, ChunkData):
                # Wait for a verification slot first (backpressure on this peer), so that
                # nothing can cancel us between accepting the data and starting its check.
                await self._verify_slots.acquire()
                accepted = message.file_id == manifest.file_id and picker.on_data(key, message.index)
                source.wake()  # a pipeline slot is free
                if not accepted:
                    self._verify_slots.release()
                    self._buffers.give_back(message.data)
                    continue
                source.expect_answer(timeout)
                self._nursery.start_soon(self._verify, source, message.index, message.data)
            elif isinstance(message, ChunkError) and message.file_id == manifest.file_id:
                source.expect_answer(timeout)
                not_held = message.code != ErrorCode.BUSY
                picker.on_rejected(key, message.index, not_held=not_held)
                if not not_held:
                    source.pause_until = time.monotonic() + 0.05
                self._wake_all()  # the chunk is requestable again, from anyone
            elif isinstance(message, ChunkError):
                raise ConnectionClosed(f"sent a CHUNK_ERROR about another file ({message.file_id.hex()[:16]})")
            elif isinstance(message, Error):
                raise ConnectionClosed(f"sent ERROR {message.code_name}: {message.message}")
            else:
                raise ConnectionClosed(f"sent an unexpected {type(message).__name__}")

    async def _verify(self, source: _Source, index: int, data: Buffer) -> None:
        key = source.peer_id
        manifest = self.manifest
        kept = False
        try:
            try:
                held = self._held
                fd = held.direct_fd if held.direct_fd >= 0 and direct_aligned(manifest, index) else held.fd
                lost = await trio.to_thread.run_sync(self._write_chunk, fd, index, data, limiter=self._io_limiter)
                kept = self._read_back.keeps_data  # then it gives the buffer back once the chunk is read back
            finally:
                self._verify_slots.release()
                if not kept:
                    # The worker thread is done with it (run_sync waits for it even when cancelled).
                    self._buffers.give_back(data)
        except IntegrityError as exc:
            self._bad_chunks += 1
            banned = self._picker.on_hash_failure(key, index)
            logger.warning("%s: bad chunk %d/%d of %s from %s: %s", self._label, index + 1, manifest.chunk_count, manifest.name, source.name, exc)
            if banned:
                source.scope.cancel()
            self._wake_all()
            return
        except StorageError:
            self._picker.on_write_failed(index)
            raise
        duplicates = self._picker.on_verified(key, index)
        nbytes = manifest.chunk_length(index)
        self._progress_at = time.monotonic()
        self._held.have.add(index)
        self._to_announce.add(index)
        self._announce_due.set()
        self._state_due.set()
        self._received.setdefault(source.name, TransferCount()).add(nbytes)
        self.transfers.record_download(source.name, nbytes)
        logger.log(self.config.chunk_log_level, "%s <- chunk %d/%d of %s from %s",
                   self._label, index + 1, manifest.chunk_count, manifest.name, source.name)
        if self.progress is not None:
            self.progress.chunk(index, nbytes, source.name)
        for bad in lost:
            self._lose(bad)
        if self._picker.complete:
            self._done.set()
        assert self._nursery is not None
        for other, other_index in duplicates:
            other_source = self._sources.get(other)
            if other_source is not None and other_source.conn is not None:
                other_source.wake()
                # In a task of its own: a peer that reads nothing must not hold up this
                # chunk's bookkeeping, and the cancel is only a courtesy.
                self._nursery.start_soon(self._cancel, other_source, other_source.conn, other_index)

    async def _cancel(self, source: _Source, conn: Connection, index: int) -> None:
        """Tell ``source`` we no longer want chunk ``index`` (endgame: another peer sent it first)."""
        with trio.move_on_after(self.config.request_timeout):
            try:
                await conn.send(CancelChunk(self.manifest.file_id, index))
            except ChunkswarmError as exc:  # its connection is ending; its own task reports why
                logger.debug("%s: no cancel of chunk %d to %s: %s", self._label, index, source.name, exc)

    def _write_chunk(self, fd: int, index: int, data: Buffer) -> list[int]:
        """Verify and write chunk ``index`` (in a worker thread); the older chunks that failed their read-back."""
        verify_and_write(self.manifest, fd, index, data)
        return self._read_back.wrote(index, data)

    def _lose(self, index: int) -> None:
        """Chunk ``index`` read back from disk differs from what was written: fetch it again."""
        self._bad_chunks += 1
        self._held.have.discard(index)
        self._picker.on_lost(index)
        logger.warning("%s: chunk %d/%d of %s read back from disk differs from the verified data; fetching it again",
                       self._label, index + 1, self.manifest.chunk_count, self.manifest.name)
        self._wake_all()

    # -- announcing and resume state -----------------------------------------------
    async def _announcer(self) -> None:
        while True:
            await self._announce_due.wait()
            await trio.sleep(self.config.announce_delay)
            await self._flush_announce()

    async def _flush_announce(self) -> None:
        self._announce_due = trio.Event()
        batch = self._to_announce
        if not batch.mask:
            return
        self._to_announce = ChunkSet(self.manifest.chunk_count)
        if not self.tracker.connected:
            # Waiting for the tracker here would hold the end of a download for its whole
            # timeout while the tracker is down; a reconnection re-announces everything held.
            logger.debug("%s: tracker down; %d chunks will be announced on reconnection", self._label, len(batch))
            return
        try:
            await self.tracker.request(Announce(self.manifest.file_id, batch.ranges()), Ok)
        except (TrackerUnavailable, TrackerError, PeerTimeout, ConnectionClosed, ProtocolError) as exc:
            # A reconnection re-announces everything held, so nothing is lost.
            logger.debug("%s: announce failed: %s", self._label, exc)

    async def _state_saver(self) -> None:
        while True:
            await self._state_due.wait()
            await trio.sleep(self.config.state_save_interval)
            self._state_due = trio.Event()
            # Only chunks whose pwrite has returned are in ``have``.
            await trio.to_thread.run_sync(self._part.save_state, self._held.have.copy())

