"""Publishing a folder as a collection version, and getting a collection into a folder.

:func:`publish_tree` hashes every file in worker threads (at most ``hashers``
at once), serves them, and tells the tracker in one pipelined write: every
PUBLISH and ANNOUNCE, then the PUBLISH_COLLECTION of the new version (one
round trip however many files). :func:`get_tree` checks the current version
against the one the folder kept (:func:`peer.collections.fetch_following`),
checks each entry's inclusion proof against the version's root, downloads
the files concurrently (each chunk verified, as every download), writes them
only under the folder (:func:`peer.collection_files.safe_target`) and then
keeps the version as the folder's.
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
from collections.abc import Callable

import attrs
import trio

from common.chunkset import ChunkSet
from common.collection import CollectionVersion, Entry, check_path, entry_proofs, sign_version, verify_entry, vv_bump
from common.errors import ChunkswarmError, IntegrityError, NotAnOwner, StorageError, TaskErrors, TrackerError, ValidationError
from common.identity import NodeKey, short_id
from common.manifest import ZERO_HASH, Manifest
from common.messages import Announce, Message, Ok, Publish, Published
from common.wording import format_size, plural
from peer.collection_files import STATE_DIR, load_kept, safe_target, save_kept
from peer.collections import check_publish_reply, collection_request, fetch_collection, fetch_following
from peer.node import Peer
from peer.tracker_client import check_reply

__all__ = ["publish_tree", "get_tree", "scan_tree", "PublishReport", "GetReport"]

logger = logging.getLogger(__name__)


@attrs.frozen
class PublishReport:
    version: CollectionVersion
    changed: bool  # False: the folder matched the current version, which stays
    files: int
    total_bytes: int


@attrs.frozen
class GetReport:
    version: CollectionVersion
    downloaded: int  # files fetched (the others were in place already)
    total_bytes: int


def scan_tree(folder: pathlib.Path, warn: Callable[[str], None] = logger.warning) -> list[tuple[str, pathlib.Path]]:
    """Every regular file under ``folder`` as (relative POSIX path, path), sorted; symbolic links and bad names skipped with a warning."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = pathlib.Path(root)
        if here == folder and STATE_DIR in dirs:
            dirs.remove(STATE_DIR)
        for name in [d for d in dirs if (here / d).is_symlink()]:
            warn(f"skipping {here / name}: a symbolic link")
            dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if path.is_symlink() or not path.is_file():
                warn(f"skipping {path}: not a regular file")
                continue
            relative = path.relative_to(folder).as_posix()
            try:
                check_path(relative)
            except ValidationError as exc:
                warn(f"skipping {path}: {exc}")
                continue
            found.append((relative, path))
    return sorted(found)


def _entries(previous: CollectionVersion | None, files: dict[str, tuple[Manifest, os.stat_result]], node: bytes) -> list[Entry]:
    """This folder's entries: unchanged ones as they were, changed ones with ``node``'s counter bumped, the gone ones deleted."""
    entries = []
    for path, (manifest, stat) in files.items():
        mode, mtime = stat.st_mode & 0o7777, stat.st_mtime_ns
        found = previous.entry(path) if previous is not None else None
        before = found[1] if found is not None else None
        if before is not None and (before.deleted, before.file_id, before.mode, before.mtime_ns) == (False, manifest.file_id, mode, mtime):
            entries.append(before)
            continue
        vector = vv_bump(before.version if before is not None else (), node)
        entries.append(Entry(path, manifest.size, manifest.file_id, mode, mtime, version=vector, modified_by=node))
    for before in previous.entries if previous is not None else ():
        if before.path not in files:
            gone = before if before.deleted else Entry(before.path, 0, ZERO_HASH, before.mode, before.mtime_ns, deleted=True,
                                                       version=vv_bump(before.version, node), modified_by=node)  # fmt: skip
            entries.append(gone)
    return entries


async def publish_tree(peer: Peer, folder: pathlib.Path, name: str, key: NodeKey, *, hashers: int | None = None) -> PublishReport:
    """Publish every file under ``folder`` and a new version of collection ``name`` signed with ``key`` (which must be an owner)."""
    scanned = await trio.to_thread.run_sync(scan_tree, folder)
    link = await peer.tracker.link()
    previous = await fetch_collection(link, name)
    if previous is not None and key.public_key not in previous.owners:
        raise NotAnOwner(f"this node ({short_id(key.node_id)}) is not an owner of collection {name!r}: an owner can add it "
                         f"with: chunkswarm collection allow {name} {key.public_key.hex()}")  # fmt: skip
    limiter = trio.CapacityLimiter(hashers or os.cpu_count() or 2)
    files: dict[str, tuple[Manifest, os.stat_result]] = {}

    async def hold(relative: str, path: pathlib.Path) -> None:
        async with limiter:
            stat = await trio.to_thread.run_sync(path.stat)
            files[relative] = (await peer.hold(path), stat)

    async with trio.open_nursery() as nursery:
        for relative, path in scanned:
            nursery.start_soon(hold, relative, path)
    files = dict(sorted(files.items()))
    entries = _entries(previous, files, key.node_id[:8])
    owners = previous.owners if previous is not None else (key.public_key,)
    changed = previous is None or tuple(sorted(entries, key=lambda e: e.path)) != previous.entries
    if changed:
        version = sign_version(key, name, 1 if previous is None else previous.sequence + 1,
                               ZERO_HASH if previous is None else previous.root, entries, owners)  # fmt: skip
    else:
        assert previous is not None
        version = previous
    manifests = {manifest.file_id: manifest for manifest, _ in files.values()}
    messages: list[Message] = []
    for manifest in manifests.values():
        messages += [Publish(manifest), Announce(manifest.file_id, ChunkSet.full(manifest.chunk_count).ranges())]
    if changed:
        messages.append(collection_request(version))
    replies = await link.request_many(messages, timeout=peer.config.tracker_timeout + 0.01 * len(messages)) if messages else []
    for message, reply in zip(messages, replies, strict=True):
        if isinstance(message, Publish):
            check_reply(reply, Published)
        elif isinstance(message, Announce):
            check_reply(reply, Ok)
        else:
            check_publish_reply(reply, version)
    total = sum(manifest.size for manifest, _ in files.values())
    return PublishReport(version, changed, len(files), total)


def _place(source: pathlib.Path, target: pathlib.Path, entry: Entry) -> None:
    """Blocking: ``target`` a copy of ``source`` (unless it is ``source``), with the entry's mode and modification time."""
    if target != source:
        temporary = target.with_name(f".{target.name}.chunkswarm-copy")
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    os.chmod(target, entry.mode)
    os.utime(target, ns=(entry.mtime_ns, entry.mtime_ns))


async def get_tree(peer: Peer, name: str, folder: pathlib.Path, *, parallel: int = 4, force: bool = False) -> GetReport:
    """Fetch collection ``name`` into ``folder``: every file concurrently, each checked against the version's root.

    Raises before writing anything when the version does not follow the one
    ``folder`` kept, or an entry's proof does not match the root; a file that
    fails is reported (TaskErrors) and the folder keeps its old version.
    """
    await trio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
    kept = await trio.to_thread.run_sync(load_kept, folder, name)
    link = await peer.tracker.link()
    version = await fetch_following(link, name, kept)
    if version is None:
        raise TrackerError(f"the tracker has no collection named {name!r}")
    proofs = await trio.to_thread.run_sync(entry_proofs, version)
    count = len(version.entries)
    wanted: dict[bytes, list[tuple[Entry, pathlib.Path]]] = {}
    for index, entry in enumerate(version.entries):
        if entry.deleted:
            continue
        if not verify_entry(entry, index, count, proofs[index], version.root):
            raise IntegrityError(f"{entry.path!r}: its proof does not match the root {version.root.hex()} of version {version.sequence}")
        target = await trio.to_thread.run_sync(safe_target, folder, entry.path)
        wanted.setdefault(entry.file_id, []).append((entry, target))
    limiter = trio.CapacityLimiter(parallel)
    failed: list[ChunkswarmError] = []
    fetched = [0, 0]

    async def fetch(file_id: bytes, places: list[tuple[Entry, pathlib.Path]]) -> None:
        entry, target = places[0]
        try:
            async with limiter:
                result = await peer.download(file_id.hex(), target.parent, force=force, save_as=target.name)
            if result.manifest.file_id != file_id or result.manifest.size != entry.size:
                raise IntegrityError(f"{entry.path!r}: the file fetched is not the one the version lists")
            for other, place in places:
                await trio.to_thread.run_sync(_place, target, place, other)
        except (ChunkswarmError, OSError) as exc:
            error = exc if isinstance(exc, ChunkswarmError) else StorageError(f"{entry.path}: {exc}")
            logger.error("%s: %s", entry.path, error)
            failed.append(error)
            return
        if not result.already_complete:
            fetched[0] += 1
            fetched[1] += result.bytes_received
        logger.info("%s: %s", entry.path, "in place already" if result.already_complete else f"fetched ({format_size(entry.size)})")

    async with trio.open_nursery() as nursery:
        for file_id, places in wanted.items():
            nursery.start_soon(fetch, file_id, places)
    if failed:
        raise TaskErrors.of(failed)
    await trio.to_thread.run_sync(save_kept, folder, version)
    logger.info("collection %r version %d (root %s): %s in %s", name, version.sequence, version.root.hex()[:16],
                plural(sum(len(p) for p in wanted.values()), "file"), folder)  # fmt: skip
    return GetReport(version, fetched[0], fetched[1])
