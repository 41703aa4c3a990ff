"""The tracker's request handlers, and the tables that say where each may run.

A handler takes the connection and a decoded request and returns the reply
frame; a ``TrackerError`` it raises becomes an ERROR reply (:func:`refusal`)
and the connection stays open. Which handlers a connection uses depends on
its phase and its agreement: ``tracker.greeting``'s tables until HELLO (and
IDENTIFY), then :data:`REQUESTS`, with WITHDRAW when the agreement includes the capability
``withdraw`` (:data:`WITHDRAWING`, PROTOCOL.md §8.5) and LOOKUP when it
includes ``lookup`` (PROTOCOL.md §8.9): :func:`after_hello` picks the table.

Where a handler runs is declared by the table it is in (see :class:`Handlers`):
``fast`` handlers may be answered by the readiness hub's fast path
(``tracker.hub``), outside the connection's task; ``task`` handlers only ever
run in the connection's own task.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import attrs
import trio

from common.address import format_address
from common.capabilities import BITTORRENT, COLLECTIONS, GATEWAY, IDENTITY, LOOKUP, UNPUBLISH, WITHDRAW
from common.codec import encode_message
from common.errors import RemoteProtocolError, StorageError, TrackerError
from common.framing import ErrorCode
from common.identity import short_id
from common.messages import (
    Announce,
    Deregister,
    Error,
    GetManifest,
    Heartbeat,
    Hello,
    Identify,
    ListFiles,
    ListTorrents,
    Lookup,
    ManifestReply,
    Message,
    Ok,
    Publish,
    Published,
    Register,
    Stats,
    StatsReply,
    Unpublish,
    WhoHas,
    Withdraw,
)
from common.wording import format_size, plural
from tracker import collections, staging
from tracker.publishers import publisher_of
from tracker.records import FileSummary, Peer
from tracker.registry import check_manifest
from tracker.replies import FILE_LIST_OVERHEAD, MORE_FIELD_MAX, encode_file_list, encode_holders, file_entry

if TYPE_CHECKING:
    from tracker.connection import Connection

__all__ = ["Handlers", "REQUESTS", "WITHDRAWING", "after_hello", "refusal", "unexpected", "LIST_SLICE"]

log = logging.getLogger(__name__)

#: A listing yields to the other connections after every this many files scanned,
#: matched or not: a name is matched in ~0.1 us, and a match costs ~3 us to build
#: and pack, so a slice holds the loop ~3 ms at most.
LIST_SLICE: Final = 1000
#: Manifests at most this many chunks are checked on the event loop: the Merkle
#: root of 256 chunks is ~512 SHA-256 of 64 bytes, well under a millisecond.
INLINE_CHECK_CHUNKS: Final = 256

_OK_FRAME: Final = encode_message(Ok())

#: Answers at once, synchronously, wherever the connection's input is read.
FastHandler: TypeAlias = "Callable[[Connection, Any], bytes]"
#: Answers in the connection's own task, and may wait.
TaskHandler: TypeAlias = "Callable[[Connection, Any], Awaitable[bytes]]"


@attrs.frozen(eq=False)
class Handlers:
    """How a connection answers requests in one phase of its life; a request in neither table is a violation.

    The rule for the next handler (access control included): a handler goes
    in ``fast`` only if it is synchronous, never blocks and answers from the
    registry and the service's counters. The readiness hub (``tracker.hub``)
    then answers it without waking the connection's task: inside that task's
    contextvars context, but in the hub's task, hence outside the
    connection's cancel scope and its nurseries, with nothing that may wait.
    Anything else (a handler that waits for a thread or the disk, yields
    between slices, changes what the connection is, or must run under its
    own cancel scope) goes in ``task``, as a coroutine function: the fast
    path hands the request to the connection's task, which answers it there,
    replies still in order.

    Plain functions, not a connection's bound methods: a connection that held
    those would refer to itself, and a cycle is freed only by the cyclic
    collector, which never sees the objects the tracker command has frozen
    (``gc.freeze`` in ``chunkswarm/tracker_command.py``). Reference counting
    frees a closed connection at once (a test checks it).
    """

    fast: Mapping[type, FastHandler]
    task: Mapping[type, TaskHandler]


def refusal(request: Message, exc: TrackerError) -> bytes:
    """The ERROR reply to a request the registry refused; the connection stays open."""
    log.debug("%s refused: %s", request.OPCODE.name, exc)
    return encode_message(Error(exc.code or ErrorCode.BAD_REQUEST, str(exc)[:1024], exc.sequence))


def unexpected(connection: Connection, request: Message) -> RemoteProtocolError:
    """The violation a request no table of the connection's phase answers is (after HELLO: before, the handshake says)."""
    if type(request) is Hello:
        return RemoteProtocolError("HELLO sent twice", error_code=ErrorCode.BAD_REQUEST)
    capability = _AGREED_ONLY.get(type(request))
    if capability is not None:
        # PROTOCOL.md §8.1: an opcode a capability added is never sent unless it was agreed.
        return RemoteProtocolError(
            f"{request.OPCODE.name} needs the capability {capability}, which this connection did not agree on", error_code=ErrorCode.BAD_REQUEST
        )
    return RemoteProtocolError(f"{request.OPCODE.name} is not a tracker request", error_code=ErrorCode.BAD_REQUEST)


def _peer_id(connection: Connection) -> bytes:
    peer_id = connection.peer_id
    assert peer_id is not None  # the handlers below are in REQUESTS, reached only after HELLO
    return peer_id


# -- answered anywhere: synchronous, from the registry -------------------------------
def register(connection: Connection, request: Register) -> bytes:
    return _register(connection, request, None)


def register_bound(connection: Connection, request: Register) -> bytes:
    """REGISTER on a connection that agreed on withdraw: the registration ends with the connection (PROTOCOL.md §8.5).

    The connection's close then releases it (``Connection.release``), unless a
    later REGISTER, on any connection, has bound it elsewhere.
    """
    reply = _register(connection, request, connection.token)
    connection.bound = True
    return reply


def _register(connection: Connection, request: Register, bound_to: object | None) -> bytes:
    # PROTOCOL.md §8.10: the gateway's port counts only on a connection that agreed on gateway.
    agreement = connection.agreement
    http_port = (request.http_port or None) if agreement is not None and agreement.speaks(GATEWAY) else None
    try:
        peer, new = connection.service.registry.register(_peer_id(connection), connection.host, request.listen_port, bound_to, connection.node,
                                                         http_port)  # fmt: skip
    except TrackerError as exc:
        if exc.code != ErrorCode.BUSY:
            raise
        # Over its network's cap of peer ids: one clear ERROR, and this connection closes
        # (it has nothing else to do here, and must not hold a connection retrying).
        raise RemoteProtocolError(str(exc), error_code=ErrorCode.BUSY) from None
    connection.claimed_port = request.listen_port
    if new:
        log.info("peer %s joined, serving at %s", peer.name, format_address(peer.host, peer.port))
    else:
        log.debug("peer %s registered again at %s", peer.name, format_address(peer.host, peer.port))
    return _OK_FRAME


def _me(connection: Connection) -> Peer:
    """The peer this connection acts as: its key's if identified, else the one at its host and claimed port (PROTOCOL.md §8.6)."""
    return connection.service.registry.peer(_peer_id(connection), connection.host, connection.claimed_port, connection.node)


def heartbeat(connection: Connection, request: Heartbeat) -> bytes:
    _me(connection)
    return _OK_FRAME


def deregister(connection: Connection, request: Deregister) -> bytes:
    peer = connection.service.registry.deregister(_peer_id(connection), connection.host, connection.claimed_port, connection.node)
    if peer is not None:
        log.info("peer %s at %s left", peer.name, format_address(peer.host, peer.port))
    return _OK_FRAME


def announce(connection: Connection, request: Announce) -> bytes:
    connection.service.registry.announce(_me(connection), request.file_id, request.ranges)
    return _OK_FRAME


def withdraw(connection: Connection, request: Withdraw) -> bytes:
    peer = _me(connection)
    if connection.service.registry.withdraw(peer, request.file_id, request.ranges) is None:
        log.debug("peer %s no longer serves %s", peer.name, request.file_id.hex()[:16])
    return _OK_FRAME


def get_manifest(connection: Connection, request: GetManifest) -> bytes:
    # Encoded once per file: a manifest of 2**19 chunks is a 16 MiB frame that
    # takes 30-100 ms to encode, and every connection sending it shares the bytes.
    record = connection.service.registry.record(request.file_id)
    if record.manifest_reply is None:
        record.manifest_reply = connection.codec.send(ManifestReply(record.manifest))
    return record.manifest_reply


def who_has(connection: Connection, request: WhoHas) -> bytes:
    service = connection.service
    limit = min(request.max_peers, service.config.max_holders)
    record, slots = service.registry.holder_slots(request.file_id, limit=limit, exclude=connection.peer_id)
    max_frame_size = connection.codec.max_frame_size
    parts = record.parts
    if type(slots) is range:  # a window of consecutive slots, the usual answer: one slice
        return encode_holders(request.file_id, parts[2 * slots.start : 2 * slots.stop], max_frame_size=max_frame_size)
    if len(slots) > 1:
        # One C call fetches the entries' parts: with 100,000 replicas they are scattered
        # across memory and nearly every one is a cache miss, which a comprehension takes
        # one at a time (~30% slower).
        return encode_holders(request.file_id, itemgetter(*[j for i in slots for j in (2 * i, 2 * i + 1)])(parts), max_frame_size=max_frame_size)
    return encode_holders(request.file_id, [part for i in slots for part in parts[2 * i : 2 * i + 2]], max_frame_size=max_frame_size)


def lookup(connection: Connection, request: Lookup) -> bytes:
    """LOOKUP (PROTOCOL.md §8.9): O(log files + matches), at most MAX_LOOKUP entries (~330 KB), so answered anywhere."""
    service = connection.service
    summaries, more = service.registry.lookup(request.query, request.limit)
    service.searches.record(request.query, len(summaries) + more, "LOOKUP")
    return encode_file_list([file_entry(s) for s in summaries], more=more, max_frame_size=connection.codec.max_frame_size)


def stats(connection: Connection, request: Stats) -> bytes:
    return connection.codec.send(StatsReply(connection.service.stats()))


# -- in the connection's task only: they wait ---------------------------------------
async def publish(connection: Connection, request: Publish) -> bytes:
    service = connection.service
    registry = service.registry
    manifest = request.manifest
    publisher = publisher_of(connection.node, connection.host)
    try:
        _me(connection)
        if service.publishers.has(manifest.file_id, publisher):
            return encode_message(Published(manifest.file_id))  # published again: costs nothing
        service.publishers.check(publisher, manifest)  # QUOTA_EXCEEDED: an ERROR reply, the connection serves on
        # The reply is sent only once the manifest is on disk, so an acknowledged publish survives a crash:
        # a small or known one is committed with the rest of its batch (tracker/staging.py); a large new
        # one's Merkle check and commit run in a worker thread.
        if registry.has_file(manifest.file_id):
            listed = registry.record(manifest.file_id).manifest
            service.publishers.add(listed, publisher)
            staging.stage(connection, listed, publisher, listed=False)
            return encode_message(Published(manifest.file_id))
        if manifest.chunk_count <= INLINE_CHECK_CHUNKS:
            check_manifest(manifest)
        else:
            await trio.to_thread.run_sync(service.check_and_save, manifest, publisher)
        service.publishers.add(manifest, publisher)
        new = registry.publish(manifest, checked=True)
        if manifest.chunk_count <= INLINE_CHECK_CHUNKS:
            staging.stage(connection, manifest, publisher, listed=new)
        if new and log.isEnabledFor(logging.INFO):  # (its arguments are ~5% of a small PUBLISH's answer)
            log.info("file %r published (%s, %s, %s)", manifest.name, manifest.hex_id[:16], format_size(manifest.size),
                     plural(manifest.chunk_count, "chunk"))  # fmt: skip
    except StorageError as exc:
        log.error("cannot store %r: %s", manifest.name, exc)
        return encode_message(Error(ErrorCode.INTERNAL, "the tracker could not store the manifest"))
    return encode_message(Published(manifest.file_id))


async def unpublish(connection: Connection, request: Unpublish) -> bytes:
    """UNPUBLISH (PROTOCOL.md §8.7): a publisher's file leaves the catalogue once its last publisher unpublishes it."""
    service = connection.service
    node = connection.node
    if node is None:
        raise TrackerError("only an identified node may unpublish (capability identity)", code=ErrorCode.IDENTITY_REQUIRED)
    manifest = service.registry.record(request.file_id).manifest  # UNKNOWN_FILE
    if not service.publishers.has(request.file_id, node):
        raise TrackerError(f"node {short_id(node)} did not publish {manifest.name!r}: only its publishers may unpublish it",
                           code=ErrorCode.IDENTITY_CONFLICT)  # fmt: skip
    last = service.publishers.of(request.file_id) == {node}
    try:
        await trio.to_thread.run_sync(lambda: service.store.unpublish(request.file_id, node, drop=last))
    except StorageError as exc:
        log.error("cannot unpublish %r: %s", manifest.name, exc)
        return encode_message(Error(ErrorCode.INTERNAL, "the tracker could not update its database"))
    if service.publishers.remove(manifest, node) and service.registry.unlist(request.file_id) is not None:
        log.info("file %r (%s) unpublished by %s: it left the catalogue", manifest.name, manifest.hex_id[:16], short_id(node))
    else:
        log.info("file %r (%s) unpublished by %s; other publishers keep it listed", manifest.name, manifest.hex_id[:16], short_id(node))
    return _OK_FRAME


async def list_files(connection: Connection, request: ListFiles) -> bytes:
    service = connection.service
    if service.unsent > service.config.max_unsent:
        # A listing can be megabytes built for one request: a crowd of clients that
        # ask and never read must not make the tracker hold gigabytes.
        raise TrackerError(
            f"the tracker holds {service.unsent} bytes of replies its clients have not read; list again later",
            code=ErrorCode.BUSY,
        )
    # With lookup agreed (PROTOCOL.md §8.9) the listing says how many files it left
    # out, beyond the limit or the frame; before, a listing that overflows is refused.
    agreement = connection.agreement
    counting = agreement is not None and agreement.speaks(LOOKUP)
    max_frame_size = connection.codec.max_frame_size
    entries: list[bytes] = []
    size = FILE_LIST_OVERHEAD + MORE_FIELD_MAX
    more = 0
    limit = request.limit
    for record in service.registry.scan(request.pattern, LIST_SLICE):
        if record is None:  # a slice scanned: let the others in, however few matched
            await trio.lowlevel.checkpoint()
            continue
        if more or len(entries) == limit:
            if not counting:
                break
            more += 1
            continue
        entry = file_entry(FileSummary.of(record))
        size += len(entry)
        if size > max_frame_size:
            if not counting:
                raise TrackerError(f"a listing of more than {len(entries)} files does not fit one frame; ask for fewer", code=ErrorCode.BAD_REQUEST)
            more += 1
            continue
        entries.append(entry)
    # A listing stopped early (no lookup agreed) logs what it returned: it did not count the rest.
    service.searches.record(request.pattern, len(entries) + more, "LIST_FILES")
    return encode_file_list(entries, more=more, max_frame_size=max_frame_size)


#: After HELLO. Before moving a handler into ``fast``, read the rule on :class:`Handlers`.
REQUESTS: Final = Handlers(
    fast={
        Register: register,
        Heartbeat: heartbeat,
        Deregister: deregister,
        Announce: announce,
        GetManifest: get_manifest,
        WhoHas: who_has,
        Stats: stats,
    },
    # A PUBLISH waits for the store, a listing yields between its slices.
    task={Publish: publish, ListFiles: list_files},
)
#: After a HELLO whose agreement includes ``withdraw`` (PROTOCOL.md §8.5): WITHDRAW is
#: answered, and a REGISTER binds the registration to this connection.
WITHDRAWING: Final = Handlers(fast={**REQUESTS.fast, Register: register_bound, Withdraw: withdraw}, task=REQUESTS.task)
#: Requests that a capability added: in a table only when the agreement includes it.
_AGREED_ONLY: Final[Mapping[type, str]] = {
    Withdraw: WITHDRAW, Identify: IDENTITY, Unpublish: UNPUBLISH, Lookup: LOOKUP, ListTorrents: BITTORRENT,
    **dict.fromkeys(collections.HANDLERS, COLLECTIONS),
}  # fmt: skip


def _table(withdraw: bool, look_up: bool, unpublishing: bool, collecting: bool) -> Handlers:
    base = WITHDRAWING if withdraw else REQUESTS
    fast = {**base.fast, Lookup: lookup} if look_up else base.fast  # PROTOCOL.md §8.9
    task: Mapping[type, TaskHandler] = {**base.task, Unpublish: unpublish} if unpublishing else base.task  # PROTOCOL.md §8.7
    if collecting:
        task = {**task, **collections.HANDLERS}  # PROTOCOL.md §8.11: they wait (the disk, a watch)
    return Handlers(fast=fast, task=task)


#: The table of every agreement, built once: what a capability adds costs nothing per request.
_TABLES: Final = {
    (w, lo, u, c): _table(w, lo, u, c) for w in (False, True) for lo in (False, True) for u in (False, True) for c in (False, True)
}


def after_hello(withdraw: bool, look_up: bool, unpublishing: bool = False, collecting: bool = False) -> Handlers:
    """The table of a connection whose agreement includes ``withdraw``, ``lookup``, ``unpublish`` and ``collections``, or not."""
    return _TABLES[withdraw, look_up, unpublishing, collecting]
