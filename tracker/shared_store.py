"""The tracker's state in Redis (``--state redis://HOST:PORT/N``): the snapshot, the log, and the store's interface.

Several tracker processes serve one swarm from one Redis database. Redis is
the source of truth and the log; each process keeps a full replica in its
own :class:`~tracker.registry.Registry` and answers from it
(``tracker.shared``). The keys, all under ``chunkswarm:``:

* ``log``: a stream of the processes' mutations, each entry ``o`` (the
  writing process) and ``e`` (a msgpack list of events, see
  ``tracker.shared``); trimmed to about :data:`LOG_LENGTH` entries;
* ``files`` (hash: file id -> msgpack manifest record), ``order`` (sorted
  set: file id by publish order, from the counter ``seq``), ``held``
  (hash: file id -> Unix time a peer last held it), ``pub`` (set: file id +
  publisher): the catalogue, as ``tracker.store`` keeps it in SQLite;
* ``peers`` (hash: peer id -> msgpack [host, port, node]), ``seen``
  (sorted set: peer id by the Unix time it was last seen), ``r:<peer id>``
  (hash: file id -> chunk mask, b"" for a chunkless file): peers and replicas,
  so a process that starts loads the current swarm.

:class:`SharedStore` has the blocking methods of ``tracker.store.Store``
(the handlers and the retention sweep call them through
``trio.to_thread.run_sync``; they run their Redis commands back on the event
loop with ``trio.from_thread.run``), so the handlers need no change. A Redis
error is a :class:`~common.errors.StorageError`: a PUBLISH or UNPUBLISH is
then refused with ERROR INTERNAL; the retention sweep skips its turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Final, TypeVar

import coredis
import coredis.exceptions
import msgpack
import trio

from common.errors import StorageError, ValidationError
from common.manifest import Manifest

__all__ = ["SharedStore", "PREFIX", "LOG_LENGTH", "key", "parse_state_url"]

log = logging.getLogger(__name__)

PREFIX: Final = b"chunkswarm:"
#: Entries the log keeps (approximately: Redis trims whole nodes), each a batch of
#: events. A process further behind than this misses what was trimmed (it is not
#: reloaded): restart it to load the snapshot.
LOG_LENGTH: Final = 100_000
#: A file id's length: the ``pub`` set's members are file id + publisher.
_FILE_ID_SIZE: Final = 32

T = TypeVar("T")
#: XADD's trimming: MAXLEN ~ LOG_LENGTH.
_TRIM: Final[dict[str, Any]] = {
    "trim_strategy": coredis.PureToken.MAXLEN, "threshold": LOG_LENGTH, "trim_operator": coredis.PureToken.APPROXIMATELY,
}


def key(*parts: bytes) -> bytes:
    return PREFIX + b"".join(parts)


def pack(events: list[list[Any]]) -> bytes:
    """Events as the log keeps them: msgpack without the bin type, which Redis's Lua (``cmsgpack``) cannot read."""
    return msgpack.packb(events, use_bin_type=False)  # type: ignore[no-any-return]


def unpack(packed: bytes) -> list[list[Any]]:
    """The log's events: every string as bytes, the kinds and hosts made text again."""
    events: list[list[Any]] = msgpack.unpackb(packed, raw=True)
    for event in events:
        event[0] = event[0].decode()
        if event[0] == "R":
            event[2] = event[2].decode()
        elif event[0] == "P":
            event[1][0] = event[1][0].decode()
    return events


def parse_state_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST:PORT/N`` as (host, port, db); ``ValueError`` with the reason otherwise."""
    scheme, sep, rest = url.partition("://")
    if scheme != "redis" or not sep:
        raise ValueError(f"{url!r}: the shared state is a redis://HOST:PORT/N address")
    where, _, db = rest.partition("/")
    host, colon, port = where.rpartition(":")
    if not colon:
        host, port = where, "6379"
    host = host.strip("[]") or "127.0.0.1"
    try:
        number, database = int(port), int(db or "0")
    except ValueError:
        raise ValueError(f"{url!r}: the port and the database number are integers") from None
    if not 0 < number < 65536 or database < 0:
        raise ValueError(f"{url!r}: no such port or database number")
    return host, number, database


#: Publish a file: list it once (its publish order from the counter), mark it held now, add the publisher, log it.
_SAVE: Final = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
if ARGV[3] ~= '' then redis.call('SADD', KEYS[5], ARGV[1] .. ARGV[3]) end
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[7], '*', 'o', ARGV[5], 'e', ARGV[6])
return 1
"""
#: Retention: forget the files still unheld since ARGV[1]; log those actually forgotten (an entry whose ``x`` is their ids, joined).
_DELETE: Final = """
local gone = {}
for i = 4, #ARGV do
  local held = redis.call('HGET', KEYS[4], ARGV[i])
  if held and tonumber(held) < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], ARGV[i]); redis.call('ZREM', KEYS[2], ARGV[i]); redis.call('HDEL', KEYS[4], ARGV[i])
    for _, member in ipairs(redis.call('SMEMBERS', KEYS[3])) do
      if string.sub(member, 1, 32) == ARGV[i] then redis.call('SREM', KEYS[3], member) end
    end
    table.insert(gone, ARGV[i])
  end
end
if #gone > 0 then redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 'o', ARGV[2], 'x', table.concat(gone)) end
return gone
"""
#: One batch of a process's events (ARGV[1], msgpack without the bin type: Redis's cmsgpack has none): the snapshot
#: updated and the batch logged, in one step on the server, so the tracker spends nothing per event on it.
_WRITE: Final = """
local now = ARGV[3]
for _, ev in ipairs(cmsgpack.unpack(ARGV[1])) do
  local kind, peer = ev[1], ev[2]
  if kind == 'R' then
    redis.call('HSET', KEYS[2], peer, cmsgpack.pack({ev[3], ev[4], ev[5] or false, ev[6] or false}))
    redis.call('ZADD', KEYS[3], now, peer)
  elseif kind == 'D' then
    redis.call('HDEL', KEYS[2], peer); redis.call('DEL', ARGV[4] .. peer); redis.call('ZREM', KEYS[3], peer)
  elseif kind == 'M' then
    if ev[4] == nil then redis.call('HDEL', ARGV[4] .. peer, ev[3]) else redis.call('HSET', ARGV[4] .. peer, ev[3], ev[4]) end
  elseif kind == 'S' then
    for _, seen in ipairs(peer) do redis.call('ZADD', KEYS[3], now, seen) end
  end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'o', ARGV[2], 'e', ARGV[1])
return 1
"""
#: Expiry: forget the peers not seen since ARGV[1] (and their replicas) in the snapshot; every process expires its own copy.
_EXPIRE: Final = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)
for _, peer in ipairs(gone) do
  redis.call('ZREM', KEYS[1], peer); redis.call('HDEL', KEYS[2], peer); redis.call('DEL', ARGV[2] .. peer)
end
return #gone
"""


class SharedStore:
    """The catalogue in Redis, with ``tracker.store.Store``'s blocking methods, and the snapshot of peers and replicas."""

    def __init__(self, client: Any, url: str, origin: bytes, *, clock: Callable[[], float] = time.time) -> None:
        #: A ``coredis.Redis`` answering bytes (typed Any: its stubs answer unions over every decoding mode).
        self.client = client
        self.url = url
        #: This process's name in the log: its own entries are skipped when it tails the log.
        self.origin = origin
        #: Wall-clock seconds, shared by the processes (``last_held``, last seen).
        self.clock = clock

    # -- the Store interface (blocking: from a worker thread) --------------------------
    def _run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return trio.from_thread.run(self._guarded, what, call)

    async def _guarded(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (coredis.exceptions.RedisError, OSError) as exc:
            raise StorageError(f"cannot {what} in the shared state at {self.url}: {exc or type(exc).__name__}") from None

    def save(self, manifest: Manifest, publisher: bytes | None = None) -> None:
        """List ``manifest`` (held as of now) with ``publisher``, and log it for the other processes. Blocking."""
        event = pack([["P", list(manifest.record()), publisher]])
        record = msgpack.packb(list(manifest.record()))
        keys = [key(b"files"), key(b"order"), key(b"seq"), key(b"held"), key(b"pub"), key(b"log")]
        args = [manifest.file_id, record, publisher or b"", repr(self.clock()), self.origin, event, LOG_LENGTH]
        self._run(f"store manifest {manifest.name!r}", lambda: self.client.eval(_SAVE, keys, args))

    def save_many(self, manifests: Sequence[tuple[Manifest, bytes | None]]) -> None:
        """:meth:`save` each (manifest, publisher), in order (the tracker's group commit of a pipelined batch). Blocking."""
        for manifest, publisher in manifests:
            self.save(manifest, publisher)

    def touch(self, file_ids: Iterable[bytes]) -> None:
        """Record that peers hold ``file_ids`` now; on a Redis error, logged and skipped (the next sweep records them). Blocking."""
        mapping = {file_id: repr(self.clock()) for file_id in file_ids}
        if mapping:
            try:
                self._run("record held files", lambda: self.client.hset(key(b"held"), mapping))
            except StorageError as exc:
                log.warning("%s; the retention sweep skips its turn", exc)

    def unheld_since(self, before: float) -> list[bytes]:
        """The files no peer has held since ``before``; none when Redis cannot say (the sweep waits for its next turn). Blocking."""
        try:
            held = self._run("read the catalogue", lambda: self.client.hgetall(key(b"held")))
        except StorageError as exc:
            log.warning("%s; the retention sweep skips its turn", exc)
            return []
        return [file_id for file_id, when in held.items() if float(when) < before]

    def delete(self, file_ids: Iterable[bytes], *, unheld_since: float) -> None:
        """Forget ``file_ids`` still unheld since ``unheld_since``, and log it. Blocking."""
        keys = [key(b"files"), key(b"order"), key(b"pub"), key(b"held"), key(b"log")]
        args: list[Any] = [repr(unheld_since), self.origin, LOG_LENGTH, *file_ids]
        try:
            self._run("forget unheld files", lambda: self.client.eval(_DELETE, keys, args))
        except StorageError as exc:
            log.warning("%s; the next sweep tries again", exc)

    def unpublish(self, file_id: bytes, publisher: bytes, *, drop: bool) -> None:
        """``publisher`` no longer publishes ``file_id`` (with ``drop``, the file goes too), logged for the others. Blocking."""

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.srem(key(b"pub"), [file_id + publisher])
                if drop:
                    pipe.hdel(key(b"files"), [file_id])
                    pipe.zrem(key(b"order"), [file_id])
                    pipe.hdel(key(b"held"), [file_id])
                pipe.xadd(key(b"log"), {b"o": self.origin, b"e": pack([["U", file_id, publisher, drop]])}, **_TRIM)

        self._run("unpublish", write)

    def publishers(self) -> list[tuple[bytes, bytes]]:
        """Every (file id, publisher). Blocking."""
        members = self._run("read the publishers", lambda: self.client.smembers(key(b"pub")))
        return [(member[:_FILE_ID_SIZE], member[_FILE_ID_SIZE:]) for member in members]

    def load(self) -> Iterator[Manifest]:
        """Every listed manifest, oldest first. Blocking."""
        return iter(self._run("read the catalogue", self.load_catalogue))

    def close(self) -> None:
        """Nothing to do: ``tracker.shared.open_shared_state`` closes the client."""

    # -- async, on the event loop ----------------------------------------------------
    async def load_catalogue(self) -> list[Manifest]:
        order = await self.client.zrange(key(b"order"), 0, -1)
        records = await self.client.hmget(key(b"files"), order) if order else []
        manifests = []
        for file_id, packed in zip(order, records, strict=True):
            if packed is None:
                continue
            try:
                manifests.append(Manifest.from_record(msgpack.unpackb(packed)))
            except (ValidationError, TypeError, ValueError) as exc:
                log.warning("skipping a damaged catalogue entry %s: %s", file_id.hex()[:16], exc)
        return manifests

    async def log_position(self) -> bytes:
        """The id of the log's newest entry (b"0-0" for none): a snapshot read after it is at least that new."""
        newest = await self.client.xrevrange(key(b"log"), count=1)
        return newest[0].identifier if newest else b"0-0"

    async def load_peers(self, peer_timeout: float) -> list[tuple[bytes, str, int, bytes | None, int | None, dict[bytes, bytes]]]:
        """The peers seen within ``peer_timeout``: (peer id, host, port, node, gateway port, {file id: chunk mask})."""
        live = await self.client.zrange(key(b"seen"), self.clock() - peer_timeout, "+inf", sortby=coredis.PureToken.BYSCORE)
        if not live:
            return []
        rows = await self.client.hmget(key(b"peers"), live)
        peers = []
        for peer_id, packed in zip(live, rows, strict=True):
            if packed is None:
                continue
            # Packed by _WRITE: [host, port, node or false, gateway port or false] (older snapshots: fewer items).
            host, port, *rest = msgpack.unpackb(packed, raw=True)
            node = rest[0] if rest and rest[0] else None
            http_port = rest[1] if len(rest) > 1 and rest[1] else None
            replicas = await self.client.hgetall(key(b"r:", peer_id))
            peers.append((peer_id, host.decode(), port, node, http_port, dict(replicas)))
        return peers

    async def write(self, events: list[list[Any]]) -> None:
        """One batch of this process's mutations: the snapshot updated and the batch logged as one entry, atomically (``_WRITE``)."""
        keys = [key(b"log"), key(b"peers"), key(b"seen")]
        await self.client.eval(_WRITE, keys, [pack(events), self.origin, repr(self.clock()), key(b"r:"), LOG_LENGTH])

    async def expire(self, cutoff: float) -> int:
        """Forget in the snapshot the peers not seen since ``cutoff`` (wall clock); how many (at most 1000 a call)."""
        return int(await self.client.eval(_EXPIRE, [key(b"seen"), key(b"peers")], [repr(cutoff), key(b"r:")]))

    async def read_log(self, after: bytes, block_ms: int, count: int = 1000) -> list[tuple[bytes, bytes, list[Any]]]:
        """The log's entries after ``after``, waiting up to ``block_ms`` for one: (id, origin, events)."""
        answer = await self.client.xread({key(b"log"): after}, count=count, block=block_ms)
        if not answer:
            return []
        entries = []
        for entry in answer[key(b"log")]:
            fields = entry.field_values
            if b"x" in fields:  # retention's (``_DELETE``): the ids of the files it forgot, joined
                gone = fields[b"x"]
                events: list[Any] = [["X", [gone[i : i + _FILE_ID_SIZE] for i in range(0, len(gone), _FILE_ID_SIZE)]]]
            else:
                events = unpack(fields[b"e"])
            entries.append((entry.identifier, fields[b"o"], events))
        return entries

    async def log_start(self) -> bytes:
        """The id of the log's oldest entry kept (b"0-0" for none)."""
        oldest = await self.client.xrange(key(b"log"), count=1)
        return oldest[0].identifier if oldest else b"0-0"
