"""Folder sync's decisions, without I/O: what a node's scan changes, and what to do when another node's version arrives.

A node keeps, for every path it has synced, the collection :class:`~common.collection.Entry`
its folder reflects (tombstones included), and the set of paths it changed
itself and has not yet published (``dirty``). Its own change bumps its
counter in the entry's version vector (:func:`local_change`,
:func:`local_deletion`). When a version of the collection arrives,
:func:`reconcile` compares each path's local and remote vectors:

* equal: nothing to do;
* the remote one is newer (``before``): take it: write its content, or delete the file for a tombstone;
* the local one is newer (``after``), or the path is new here: publish it;
* concurrent: a conflict. The newer edit keeps the name (a modification beats a
  deletion; equal times: the larger node id), the other becomes a conflict copy
  named as Syncthing names them (:func:`common.sync_rules.conflict_name`), a
  new file that syncs like any other. The entry that keeps the name takes the
  merged vector plus this node's bump, so it dominates both sides;
* a path the collection no longer lists (its tombstone expired) and this node
  did not change: it was deleted long ago, so it is deleted here too.

A file deleted while a node was offline does not come back: the tombstone's
vector dominates the offline node's unchanged entry. If the offline node edited
it meanwhile, the edit is concurrent with the deletion and wins (as in Syncthing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet

import attrs

from common.collection import Entry, vv_bump, vv_compare, vv_merge
from common.manifest import ZERO_HASH
from common.sync_rules import conflict_name

__all__ = ["Plan", "local_change", "local_deletion", "reconcile", "expire_tombstones"]

#: Tombstones are kept this long in the collection (30 days); a node offline for longer finds the
#: path simply absent, and deletes its unchanged copy then (see :func:`reconcile`).
TOMBSTONE_RETENTION_NS = 30 * 24 * 3600 * 10**9


def local_change(previous: Entry | None, path: str, *, size: int, file_id: bytes, mode: int, mtime_ns: int, me: bytes) -> Entry:
    """The entry for a file this node added or changed, succeeding ``previous`` (None: a new path)."""
    version = vv_bump(previous.version if previous is not None else (), me)
    return Entry(path=path, size=size, file_id=file_id, mode=mode, mtime_ns=mtime_ns, version=version, modified_by=me)


def local_deletion(previous: Entry, *, me: bytes, now_ns: int) -> Entry:
    """The tombstone for a file this node deleted; its time is the deletion's (for expiry and conflicts)."""
    return Entry(path=previous.path, size=0, file_id=ZERO_HASH, mode=previous.mode, mtime_ns=now_ns, deleted=True,
                 version=vv_bump(previous.version, me), modified_by=me)  # fmt: skip


def _wins(a: Entry, b: Entry) -> bool:
    """True if ``a`` keeps the name against the concurrent ``b``: not deleted, then newer, then the larger node id."""
    return (not a.deleted, a.mtime_ns, a.modified_by) > (not b.deleted, b.mtime_ns, b.modified_by)


@attrs.frozen
class Plan:
    """What :func:`reconcile` decided; the engine applies it in this order: set aside, take, drop, then publish."""

    #: (path, conflict copy path): move the local file aside before its path is taken.
    set_aside: tuple[tuple[str, str], ...] = ()
    #: Entries to make true on disk (write the content at the path, or remove the file of a tombstone).
    take: tuple[Entry, ...] = ()
    #: Paths the collection dropped and this node did not change: remove the file, forget the path.
    drop: tuple[str, ...] = ()
    #: Entries for the next version (the local state wins, or a conflict was resolved here).
    publish: tuple[Entry, ...] = ()
    #: Human-readable notes on conflicts, for the log.
    conflicts: tuple[str, ...] = ()


def reconcile(local: Mapping[str, Entry], dirty: AbstractSet[str], remote: Mapping[str, Entry], me: bytes) -> Plan:
    """The :class:`Plan` that brings this node and the collection ``remote`` into step; see the module docstring."""
    set_aside: list[tuple[str, str]] = []
    take: list[Entry] = []
    drop: list[str] = []
    publish: list[Entry] = []
    conflicts: list[str] = []
    taken_paths = set(remote) | set(local)
    for path in sorted(taken_paths):
        mine, theirs = local.get(path), remote.get(path)
        if theirs is None:
            assert mine is not None
            if path in dirty:
                if not mine.deleted:
                    publish.append(mine)  # new here (a deletion of a never-published file needs no tombstone)
            else:
                drop.append(path)
            continue
        if mine is None:
            take.append(theirs)
            continue
        if mine.version == theirs.version:
            continue  # most paths of a large folder: "equal" without vv_compare's two dicts
        order = vv_compare(mine.version, theirs.version)
        if order == "equal":
            continue
        if order == "before":
            take.append(theirs)
        elif order == "after":
            publish.append(mine)
        else:
            merged = vv_bump(vv_merge(mine.version, theirs.version), me)
            if _wins(mine, theirs):
                publish.append(attrs.evolve(mine, version=merged))
                if not theirs.deleted:
                    copy = _copy(theirs, me, taken_paths)
                    take.append(copy)
                    publish.append(copy)
                    conflicts.append(f"{path}: concurrent edits; this node's keeps the name, the other's is {copy.path}")
            else:
                if not mine.deleted:
                    copy = _copy(mine, me, taken_paths)
                    set_aside.append((path, copy.path))
                    publish.append(copy)
                    conflicts.append(f"{path}: concurrent edits; the other node's keeps the name, this one's is {copy.path}")
                winner = attrs.evolve(theirs, version=merged)
                take.append(winner)
                publish.append(winner)
    return Plan(tuple(set_aside), tuple(take), tuple(drop), tuple(publish), tuple(conflicts))


def _copy(loser: Entry, me: bytes, taken: set[str]) -> Entry:
    """The conflict copy of ``loser``: a new path (unique among ``taken``), a new history starting with this node."""
    path = conflict_name(loser.path, loser.mtime_ns, loser.modified_by or me)
    base, n = path, 1
    while path in taken:
        n += 1
        stem, dot, ext = base.rpartition(".")
        path = f"{stem}-{n}.{ext}" if dot and "sync-conflict" in stem else f"{base}-{n}"
    taken.add(path)
    return Entry(path=path, size=loser.size, file_id=loser.file_id, mode=loser.mode, mtime_ns=loser.mtime_ns,
                 version=vv_bump((), me), modified_by=me)  # fmt: skip


def expire_tombstones(entries: Iterable[Entry], now_ns: int, retention_ns: int = TOMBSTONE_RETENTION_NS) -> list[Entry]:
    """``entries`` without the tombstones older than ``retention_ns``."""
    return [entry for entry in entries if not (entry.deleted and now_ns - entry.mtime_ns > retention_ns)]
