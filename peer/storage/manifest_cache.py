"""Manifests of published files, cached on disk so an unchanged file is hashed only once."""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib

import attrs
import msgpack

from common.errors import IntegrityError, StorageError, ValidationError
from common.manifest import Manifest, ProgressCallback, build_manifest, chunk_size_for, hash_fd
from peer.storage.fs import atomic_write, file_signature, storage_error

__all__ = ["ManifestCache"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class ManifestCache:
    """Manifests of published files, keyed by absolute path, size, mtime and chunk size.

    One small MessagePack file per entry under ``state_dir/manifests``, written
    atomically, so peers sharing a state directory never see half an entry.
    """

    directory: pathlib.Path

    @staticmethod
    def _key(path: pathlib.Path, signature: tuple[int, int], chunk_size: int) -> str:
        # "record": entries hold Manifest.record(); entries of the older field order have other keys.
        text = f"record\0{path.resolve()}\0{signature[0]}\0{signature[1]}\0{chunk_size}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()

    def get(self, path: pathlib.Path, signature: tuple[int, int], chunk_size: int) -> Manifest | None:
        entry = self.directory / self._key(path, signature, chunk_size)
        try:
            manifest = Manifest.from_record(msgpack.unpackb(entry.read_bytes(), raw=False))
            manifest.verify()
        except (OSError, ValueError, TypeError, ValidationError, IntegrityError, msgpack.UnpackException):
            return None
        return manifest

    def put(self, path: pathlib.Path, signature: tuple[int, int], manifest: Manifest) -> None:
        entry = self.directory / self._key(path, signature, manifest.chunk_size)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(entry, msgpack.packb(manifest.record(), use_bin_type=True))
        except OSError as exc:
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
            size, hashes = hash_fd(fd, chunk_size)
        except OSError as exc:
            raise storage_error("read", path, exc) from None
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != signature:
            raise StorageError(f"{path} changed while it was being hashed")
        manifest = Manifest.from_hashes(path.name, size, chunk_size, hashes)
        self.put(path, signature, manifest)
        return manifest, signature, False
