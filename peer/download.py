"""The download task tree: one file from many peers at once.

::

    Downloader.run
    ├── refresher     WHO_HAS every refresh_interval (or when peers run out); starts sessions; stall detection
    ├── announcer     ANNOUNCE verified chunks in batches (at most announce_delay late; peer/announcer.py)
    ├── state saver   writes the resume state (after the pwrite of every chunk it lists)
    ├── session x N   one connection per holder (peer/session.py): requester and receiver
    └── verifier x M  SHA-256 + pwrite in a worker thread; then announce, serve, log, cancel endgame duplicates

Scheduling decisions are the pure :class:`~peer.picker.Picker`'s, the disk work :class:`~peer.download_file.DownloadFile`'s,
the conversation with each holder its :class:`~peer.session.Session`'s; this module ties them together in time. Every
verified chunk is added to the library's ``HeldFile`` at once, so the chunk server serves it to other downloaders meanwhile.

Two seams make it testable without sockets or a tracker: ``connect`` opens the stream to a holder (memory streams in
tests), and ``tracker`` is anything with the two requests a download makes (:class:`Tracker`).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Protocol, TypeVar

import attrs
import trio

from common.chunkset import ChunkSet
from common.codec import chunk_data_body_size
from common.errors import (
    Busy,
    ConnectionClosed,
    IntegrityError,
    NoHolders,
    PeerTimeout,
    ProtocolError,
    StorageError,
    TrackerError,
    TrackerUnavailable,
    describe,
)
from common.manifest import Manifest
from common.messages import Hello, Holders, Message, WhoHas
from common.wording import plural
from peer.announcer import Announcer
from peer.buffers import BufferPool
from peer.config import PeerConfig
from peer.download_file import DownloadFile
from peer.greeting import Connect, connect_tcp
from peer.picker import Picker
from peer.progress import DownloadResult, ProgressSink, completion_notes
from peer.secure import Private
from peer.session import DownloadContext, Session
from peer.slots import Reciprocity
from peer.sources import Sources, pool_by_address
from peer.status import TransferCount, Transfers, describe_remote
from peer.storage.chunk_io import Buffer
from peer.storage.library import HeldFile, Library
from peer.tasks import open_nursery

__all__ = ["Tracker", "Downloader"]

logger = logging.getLogger(__name__)

M = TypeVar("M")

#: The shortest time between two holder refreshes of one download.
_MIN_REFRESH_GAP = 0.1
#: A source that has delivered nothing this long after it started no longer takes one of the ``max_download_peers``
#: places (it stays until ``first_answer_timeout``); while no source delivers, none takes a place: every holder
#: listed is tried at once (trials ask little), ...
_TRIAL_GRACE = (0.5, 0.0)
#: ... and sources in all are at most this many times ``max_download_peers``.
_TRIAL_FACTOR = 8


class Tracker(Protocol):
    """What a download asks of the tracker: WHO_HAS and ANNOUNCE (a :class:`~peer.tracker_client.TrackerClient` in a peer)."""

    @property
    def connected(self) -> bool: ...

    async def request(self, message: Message, expect: type[M]) -> M: ...


@attrs.define(eq=False)
class Downloader:
    """Downloads ``manifest`` into ``out_dir`` from the swarm; see the module docstring."""

    config: PeerConfig
    manifest: Manifest
    out_dir: pathlib.Path
    tracker: Tracker
    library: Library
    transfers: Transfers
    hello: Hello
    peer_id: bytes
    force: bool = False
    progress: ProgressSink | None = None
    connect: Connect = connect_tcp
    save_as: str = ""  # the output file's name in out_dir, if not the manifest's
    #: A private swarm: holders are reached over TLS, proven members, pinned by peer id (``peer/secure.py``).
    private: Private | None = None
    reciprocity: Reciprocity = attrs.field(factory=Reciprocity)  # what holders upload to us: the chunk server's slots favour them

    _picker: Picker[bytes] = attrs.field(init=False)
    _file: DownloadFile = attrs.field(init=False)
    _held: HeldFile = attrs.field(init=False)
    _sources: dict[bytes, Session] = attrs.field(init=False, factory=dict)
    #: Where sources are, per address and IP, and when failed ones may be tried again (``peer/sources.py``).
    _places: Sources = attrs.field(init=False)
    _refresh_now: trio.Event = attrs.field(init=False, factory=trio.Event)
    #: When the last chunk was verified (or the swarm joined): see ``_refresher``.
    _progress_at: float = attrs.field(init=False, default=0.0)
    _done: trio.Event = attrs.field(init=False, factory=trio.Event)
    _announcer: Announcer = attrs.field(init=False)
    _state_due: trio.Event = attrs.field(init=False, factory=trio.Event)
    _io_limiter: trio.CapacityLimiter = attrs.field(init=False)
    _received: dict[str, TransferCount] = attrs.field(init=False, factory=dict)
    _bad_chunks: int = attrs.field(init=False, default=0)
    _buffers: BufferPool = attrs.field(init=False)
    #: What the sessions share, while the swarm runs (its nursery is the swarm's: sessions, checks and cancels run there).
    _context: DownloadContext | None = attrs.field(init=False, default=None)
    _first_holders: Holders | None = attrs.field(init=False, default=None)  # asked before the start, for the first refresh

    def __attrs_post_init__(self) -> None:
        count = self.manifest.chunk_count
        self._picker = Picker(count, max_in_flight=self.config.pipeline_depth, ban_threshold=self.config.ban_threshold,
                              endgame_copies=self.config.endgame_copies)  # fmt: skip
        self._buffers = BufferPool(chunk_data_body_size(self.manifest.chunk_size))
        self._file = DownloadFile(self.manifest, self.out_dir / (self.save_as or self.manifest.name), self.library, self.config, self._buffers.give_back)
        self._announcer = Announcer(self.manifest, self.tracker, self.config.announce_delay, self.config.name)
        self._io_limiter = trio.CapacityLimiter(self.config.io_threads)
        self._places = Sources(self.config.max_sources_per_ip, self.config.peer_retry_delay, self.config.max_retry_delay, self.config.allow)

    @property
    def final_path(self) -> pathlib.Path:
        return self._file.final_path

    @property
    def _label(self) -> str:
        return self.config.name

    # -- the whole download ----------------------------------------------------
    async def run(self) -> DownloadResult:
        started = trio.current_time()
        manifest = self.manifest
        manifest.verify()  # the manifest against the file id, before trusting any chunk hash
        if await self._file.in_place(force=self.force):
            logger.debug("%s is already complete at %s", manifest.name, self.final_path)  # the app says so
            # Served from now on: the tracker must hear it, or nobody is sent here for it.
            self._announcer.update(ChunkSet.full(manifest.chunk_count))
            await self._announcer.flush()
            return self._result(started, resumed=manifest.chunk_count, already=True)
        await self._check_held_somewhere()
        # Held from before the part file is opened until after it is moved into place (or kept).
        await self._file.lock()
        try:
            return await self._fill(started)
        finally:
            self._file.unlock()

    async def _check_held_somewhere(self) -> None:
        """A fresh download of a file nobody holds fails now, before anything is created (a resumed one goes on: its part file may do)."""
        if self._file.has_part_file():
            return
        try:
            self._first_holders = holders = await self._who_has()
        except (TrackerUnavailable, TrackerError, PeerTimeout, ConnectionClosed, ProtocolError):
            return  # left to the refresher, as during the download
        if not any(holder.peer_id != self.peer_id for holder in holders.holders):
            raise NoHolders(f"no peer holds {self.manifest.name} now (0 holders on the tracker); nothing was downloaded")

    async def _fill(self, started: float) -> DownloadResult:
        manifest = self.manifest
        resumed = await self._file.open(force=self.force)
        self._held = self._file.held
        self._picker.mark_have(resumed)
        if self.progress is not None:
            self.progress.started(manifest.name, manifest.size, sum(manifest.chunk_length(i) for i in resumed))
        try:
            self._announcer.update(self._held.have)  # resumed chunks are served now: say so (all of them, if complete)
            if not self._picker.complete:
                await self._swarm()
            await self._announcer.flush()
            await self._file.finish(force=self.force)
        except BaseException:
            await self._file.abandon()
            raise
        logger.debug("%s: %s complete: %s", self._label, manifest.name, self.final_path)  # the app says where it is
        for level, note in completion_notes(self._picker.duplicates, self._picker.surplus, self._picker.refetched, self._bad_chunks, manifest.chunk_count):
            logger.log(level, "%s: %s: %s", self._label, manifest.name, note)
        if self.progress is not None:
            self.progress.finished()
        return self._result(started, resumed=len(resumed))

    def _result(self, started: float, *, resumed: int, already: bool = False) -> DownloadResult:
        received = dict(self._received)
        return DownloadResult(self.final_path, self.manifest, received, sum(c.chunks for c in received.values()), resumed,
                              self._picker.refetched, self._bad_chunks, trio.current_time() - started, already)  # fmt: skip

    # -- the swarm ---------------------------------------------------------------
    async def _swarm(self) -> None:
        async with open_nursery() as nursery:
            self._context = DownloadContext(self.manifest, self.config, self.hello, self._picker, self._buffers, self.connect,
                                            private=self.private, verify_slots=trio.Semaphore(max(4, 3 * self.config.io_threads)),
                                            nursery=nursery, verify=self._verify, cancel=self._cancel, wake_all=self._wake_all,
                                            refresh=self._refresh_soon)  # fmt: skip
            nursery.start_soon(self._refresher)
            nursery.start_soon(self._announcer.run)
            nursery.start_soon(self._state_saver)
            await self._done.wait()
            nursery.cancel_scope.cancel()
        self._context = None
        await self._file.save_state()

    async def _refresher(self) -> None:
        stalled_since: float | None = None
        config = self.config
        self._progress_at = trio.current_time()
        while True:
            try:
                holders, self._first_holders = self._first_holders or await self._who_has(), None
                self._apply_holders(holders)
            except (TrackerUnavailable, TrackerError, PeerTimeout, ConnectionClosed, ProtocolError) as exc:
                logger.debug("%s: holder refresh failed: %s", self._label, exc)
            picker = self._picker
            now = trio.current_time()
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
            # While sources are on trial and none delivers, places free up every _TRIAL_GRACE: ask again soon.
            on_trial = self._sources and not any(session.delivered for session in self._sources.values())
            with trio.move_on_after(_MIN_REFRESH_GAP if on_trial else config.refresh_interval):
                await self._refresh_now.wait()
            # At most so often, however many sessions end: holders refusing every connection must not make a loop of WHO_HAS.
            await trio.sleep(_MIN_REFRESH_GAP)

    async def _who_has(self) -> Holders:
        return await self.tracker.request(WhoHas(self.manifest.file_id, max_peers=50), Holders)

    def _refresh_soon(self) -> None:
        self._refresh_now.set()

    def _connecting(self) -> bool:
        # A first attempt to reach a holder holds off the stall timer; a retry of one that
        # already failed does not: the tracker lists a SIGKILLed holder until its peer
        # timeout, and retrying it every peer_retry_delay must not keep the download alive.
        return any(session.conn is None and not self._places.retrying(session.address) for session in self._sources.values())

    def _give_up(self) -> None:
        missing = tuple(self._picker.unavailable()) or tuple(self._picker.have.missing())
        shown = ", ".join(str(i + 1) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise NoHolders(
            f"no reachable peer holds {plural(len(missing), 'chunk')} of {self.manifest.name} (chunks {shown}); "
            f"the partial download is kept in {self._held.path}: run get again to resume",
            missing,
        )

    def _apply_holders(self, holders: Holders) -> None:
        count = self.manifest.chunk_count
        missing = ~self._picker.have.mask & ((1 << count) - 1)
        now = trio.current_time()
        context = self._context
        assert context is not None
        config, places = self.config, self._places
        by_address = {session.address: session for session in self._sources.values()}
        offers = []
        for address, (peer_id, chunks) in pool_by_address(holders.holders, count, skip=self.peer_id, admits=places.admits).items():
            if (known := by_address.get(address) or self._sources.get(peer_id)) is None:
                offers.append((address, peer_id, chunks))
                continue
            self._picker.set_peer_chunks(known.peer_id, chunks)
        places.offer_all(offers)
        places.rotate(list(self._sources.values()), now, interval=config.rotate_interval, places=config.max_download_peers, wanted=missing)
        # A source that delivers, or has just started, takes a place; others are on trial (see _TRIAL_GRACE).
        delivering = [session for session in self._sources.values() if session.delivered and not session.retiring]
        grace = _TRIAL_GRACE[not delivering]
        placed = len(delivering) + sum(1 for session in self._sources.values() if not session.delivered and now - session.since < grace)
        for extra in delivering[config.max_download_peers :]:
            extra.scope.cancel()  # more trials delivered than there are places: the latest go (retried as any other)
        for address, peer_id, chunks in places.candidates(rare=self._picker.unavailable_mask()):
            if placed >= config.max_download_peers or len(self._sources) >= _TRIAL_FACTOR * config.max_download_peers:
                break
            if peer_id in self._sources or self._picker.is_banned(peer_id) or not chunks.mask & missing or not places.may_connect(address, now):
                continue
            session = Session(context, peer_id, address, describe_remote("", address), since=now)
            places.connect(address)
            self._sources[peer_id] = session
            placed += 1
            self._picker.set_peer_chunks(peer_id, chunks)
            context.nursery.start_soon(self._run_session, session)
        self._report_peers()
        self._wake_all()

    def _report_peers(self) -> None:
        report = getattr(self.progress, "peers", None)  # optional: a sink with just started/chunk/finished works
        if report is not None:
            report(len(self._sources))

    def _wake_all(self) -> None:
        for session in self._sources.values():
            session.wake()

    # -- one source peer -----------------------------------------------------------
    async def _run_session(self, session: Session) -> None:
        """Run ``session`` to its end, say why it ended, and let its peer be retried after ``peer_retry_delay``."""
        key = session.peer_id
        busy = False  # a busy peer is asked again after peer_retry_delay, as one that delivered
        try:
            with session.scope:
                try:
                    await session.run()
                except* Busy as refused:
                    busy = True
                    logger.debug("%s: %s is busy: %s", self._label, session.name, describe(refused))
                except* (ConnectionClosed, PeerTimeout, ProtocolError, OSError, trio.TooSlowError) as ended:
                    # Its requester and receiver may both have failed: every reason is said.
                    logger.info("%s: dropping %s: %s", self._label, session.name, describe(ended))
            if self._picker.is_banned(key):
                logger.warning("%s: banned %s for sending bad data", self._label, session.name)
        finally:
            self._sources.pop(key, None)
            self._picker.remove_peer(key)
            delay = self._places.ended(session.address, trio.current_time(), delivered=session.delivered or busy)
            if delay > self.config.peer_retry_delay:
                logger.debug("%s: %s is tried again in %g s at the earliest", self._label, session.name, delay)
            self._wake_all()
            self._refresh_now.set()
            self._report_peers()
            await session.aclose()

    # -- checking received chunks ----------------------------------------------------
    async def _verify(self, session: Session, index: int, data: Buffer) -> None:
        context = self._context
        assert context is not None
        key = session.peer_id
        manifest = self.manifest
        kept = False
        try:
            try:
                lost = await trio.to_thread.run_sync(self._file.write, index, data, limiter=self._io_limiter)
                kept = self._file.keeps_data  # then it gives the buffer back once the chunk is read back
            finally:
                context.verify_slots.release()
                if not kept:
                    # The worker thread is done with it (run_sync waits for it even when cancelled).
                    self._buffers.give_back(data)
        except IntegrityError as exc:
            self._bad_chunks += 1
            banned = self._picker.on_hash_failure(key, index)
            logger.warning("%s: bad chunk %d/%d of %s from %s: %s", self._label, index + 1, manifest.chunk_count, manifest.name, session.name, exc)
            if banned:
                session.scope.cancel()
            self._wake_all()
            return
        except StorageError:
            self._picker.on_not_kept(index)
            raise
        duplicates = self._picker.on_verified(key, index)
        nbytes = manifest.chunk_length(index)
        self._progress_at = trio.current_time()
        self._held.have.add(index)
        self._announcer.add(index)
        self._state_due.set()
        self._received.setdefault(session.name, TransferCount()).add(nbytes)
        self.transfers.record_download(session.name, nbytes)
        self.reciprocity.record(Reciprocity.key(session.address[0], key), nbytes, self._progress_at)
        logger.log(self.config.chunk_log_level, "%s <- chunk %d/%d of %s from %s",
                   self._label, index + 1, manifest.chunk_count, manifest.name, session.name)
        if self.progress is not None:
            self.progress.chunk(index, nbytes, session.name)
        for bad in lost:
            self._lose(bad)
        if self._picker.complete:
            self._done.set()
        for other_key, other_index in duplicates:  # normally none: cancelled as the first copy came (Session._receiver)
            self._cancel(other_key, other_index)

    def _cancel(self, key: bytes, index: int) -> None:
        """Send CANCEL_CHUNK for ``index`` to source ``key`` (the picker has dropped the request)."""
        other, context = self._sources.get(key), self._context
        if other is not None and other.conn is not None and context is not None:
            other.wake()
            # In a task of its own: a peer that reads nothing must not hold up this chunk's bookkeeping (the cancel is a courtesy).
            context.nursery.start_soon(other.cancel, index)

    def _lose(self, index: int) -> None:
        """Chunk ``index`` read back from disk differs from what was written: fetch it again."""
        self._bad_chunks += 1
        self._held.have.discard(index)
        self._picker.on_lost(index)
        logger.warning("%s: chunk %d/%d of %s read back from disk differs from the verified data; fetching it again", self._label, index + 1,
                       self.manifest.chunk_count, self.manifest.name)  # fmt: skip
        self._wake_all()

    # -- resume state ------------------------------------------------------------------
    async def _state_saver(self) -> None:
        while True:
            await self._state_due.wait()
            await trio.sleep(self.config.state_save_interval)
            self._state_due = trio.Event()
            # Only chunks whose pwrite has returned are in ``have``.
            await self._file.save_state()
