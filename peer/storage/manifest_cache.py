"""Manifests of published files, cached on disk so an unchanged file is hashed only once."""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import attrs
import msgpack

from common.errors import IntegrityError, StorageError, ValidationError
from common.manifest import MAX_CHUNKS, Manifest, ProgressCallback, build_manifest, chunk_count_for, chunk_size_for, hash_fd
from peer.storage.chunk_io import hash_range
from peer.storage.fs import atomic_write, file_signature, storage_error

__all__ = ["ManifestCache", "EntryFolder", "PARALLEL_HASH_BYTES"]

logger = logging.getLogger(__name__)

#: Files from this size on are hashed by two threads at once, each over half of the chunks
#: (hashlib releases the GIL): a 1 GiB file on tmpfs took 1.2-1.5 s in one thread, 0.54-0.85 s in two.
PARALLEL_HASH_BYTES = 32 * 1024 * 1024
_HASH_THREADS = 2


def _hash_in_parallel(path: pathlib.Path, size: int, chunk_size: int, progress: ProgressCallback | None) -> Manifest:
    """The manifest of the ``size`` bytes of ``path``, its chunk range split between threads (blocking)."""
    count = chunk_count_for(size, chunk_size)
    if count > MAX_CHUNKS:
        raise ValidationError(f"{path.name!r} needs {count} chunks of {chunk_size} bytes; the limit is {MAX_CHUNKS}: use a larger chunk size")
    if progress is not None:
        lock = threading.Lock()
        unlocked = progress

        def progress(nbytes: int) -> None:  # the callback is called from one thread at a time, as from build_manifest
            with lock:
                unlocked(nbytes)

    fd = os.open(path, os.O_RDONLY)
    try:
        hashes = _hash_open_in_parallel(fd, size, chunk_size, count, progress)
    finally:
        os.close(fd)
    return Manifest.from_hashes(path.name, size, chunk_size, hashes)


def _hash_open_in_parallel(fd: int, size: int, chunk_size: int, count: int, progress: ProgressCallback | None = None) -> list[bytes]:
    """The ``count`` chunk hashes of the ``size`` bytes open at ``fd``, the range split between threads (blocking)."""
    bounds = [count * part // _HASH_THREADS for part in range(_HASH_THREADS + 1)]
    with ThreadPoolExecutor(_HASH_THREADS - 1, thread_name_prefix="hash") as pool:
        others = [pool.submit(hash_range, fd, size, chunk_size, bounds[i], bounds[i + 1], progress) for i in range(1, _HASH_THREADS)]
        hashes = hash_range(fd, size, chunk_size, bounds[0], bounds[1], progress)
        for other in others:
            hashes += other.result()
    return hashes


class EntryFolder(Protocol):
    """Where a cache keeps its entries when not by path: ``read`` (None: no such entry) and atomic ``write`` of one entry."""

    def read(self, name: str) -> bytes | None: ...

    def write(self, name: str, data: bytes) -> None: ...


@attrs.define(eq=False)
class ManifestCache:
    """Manifests of published files, keyed by absolute path, size, mtime and chunk size.

    One small MessagePack file per entry under ``state_dir/manifests``, written
    atomically, so peers sharing a state directory never see half an entry.
    With ``folder`` the entries are read and written through it instead of by
    path (a synced folder's cache: ``peer/sync/state.py``, beneath the folder).
    """

    directory: pathlib.Path
    folder: EntryFolder | None = None

    @staticmethod
    def _key(path: pathlib.Path, signature: tuple[int, int], chunk_size: int) -> str:
        # "record": entries hold Manifest.record(); entries of the older field order have other keys.
        text = f"record\0{path.resolve()}\0{signature[0]}\0{signature[1]}\0{chunk_size}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, path: pathlib.Path, signature: tuple[int, int], chunk_size: int) -> Manifest | None:
        key = self._key(path, signature, chunk_size)
        try:
            data = (self.directory / key).read_bytes() if self.folder is None else self.folder.read(key)
            if data is None:
                return None
            manifest = Manifest.from_record(msgpack.unpackb(data, raw=False))
            manifest.verify()
        except (OSError, ValueError, TypeError, ValidationError, IntegrityError, StorageError, msgpack.UnpackException):
            return None
        return manifest

    def put(self, path: pathlib.Path, signature: tuple[int, int], manifest: Manifest) -> None:
        key = self._key(path, signature, manifest.chunk_size)
        data = msgpack.packb(manifest.record(), use_bin_type=True)
        try:
            if self.folder is not None:
                self.folder.write(key, data)
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(self.directory / key, data)
        except (OSError, StorageError) as exc:
            logger.warning("cannot cache the manifest of %s: %s", path, exc)

    def manifest_for(
        self, path: pathlib.Path, chunk_size: int | None = None, progress: ProgressCallback | None = None
    ) -> tuple[Manifest, tuple[int, int], bool]:
        """The manifest of ``path`` (cached, or hashed now), its signature, and whether it came from the cache.

        ``chunk_size`` None: ``chunk_size_for`` the file's size (PROTOCOL.md §4.4). ``progress`` is
        called with the bytes hashed after every chunk, in this (worker) thread.
        """
        signature = file_signature(path)
        if signature is None:
            raise StorageError(f"{path}: cannot read it")
        if chunk_size is None:
            chunk_size = chunk_size_for(signature[0])  # the size hashed: the signature is checked again after
        cached = self.get(path, signature, chunk_size)
        if cached is not None:
            return cached, signature, True
        try:
            if signature[0] >= PARALLEL_HASH_BYTES:
                manifest = _hash_in_parallel(path, signature[0], chunk_size, progress)
            else:
                manifest = build_manifest(path, chunk_size, progress=progress)
        except OSError as exc:
            raise storage_error("read", path, exc) from None
        after = file_signature(path)
        if after != signature:
            raise StorageError(f"{path} changed while it was being hashed")
        self.put(path, signature, manifest)
        return manifest, signature, False

    def manifest_of_open(self, fd: int, path: pathlib.Path, chunk_size: int) -> tuple[Manifest, tuple[int, int], bool]:
        """:meth:`manifest_for` the file open at ``fd``: what is hashed is what the descriptor reads, wherever ``path`` leads now.

        ``path`` names the manifest and keys the cache.
        """
        st = os.fstat(fd)
        signature = (st.st_size, st.st_mtime_ns)
        cached = self.get(path, signature, chunk_size)
        if cached is not None:
            return cached, signature, True
        try:
            if signature[0] >= PARALLEL_HASH_BYTES and (count := chunk_count_for(signature[0], chunk_size)) <= MAX_CHUNKS:
                size, hashes = signature[0], _hash_open_in_parallel(fd, signature[0], chunk_size, count)
            else:
                size, hashes = hash_fd(fd, chunk_size)
        except OSError as exc:
            raise storage_error("read", path, exc) from None
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != signature:
            raise StorageError(f"{path} changed while it was being hashed")
        manifest = Manifest.from_hashes(path.name, size, chunk_size, hashes)
        self.put(path, signature, manifest)
        return manifest, signature, False
