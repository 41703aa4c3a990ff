"""The files a peer holds and serves: :class:`HeldFile` entries in a :class:`Library`, by file id."""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Iterable

import attrs

from common.chunkset import ChunkSet
from common.errors import StorageError
from common.manifest import Manifest
from peer.storage.fs import close_fd, file_signature, storage_error

__all__ = ["HeldFile", "Library", "open_published", "expand_paths"]

logger = logging.getLogger(__name__)


@attrs.define(eq=False)
class HeldFile:
    """A file the peer serves chunks of: a published file or a (partial) download.

    ``fd`` stays open for the life of the entry; it survives the rename of a
    part file into place. ``signature`` is the (size, mtime_ns) recorded when
    the file was verified; if the file on disk stops matching it, the file is
    withdrawn (a published file edited under our feet must not be served).
    """

    manifest: Manifest
    path: pathlib.Path
    fd: int
    have: ChunkSet
    signature: tuple[int, int] | None = None
    withdrawn: bool = False
    #: A second, ``O_DIRECT`` descriptor on a download's part file, or -1 (see :func:`peer.storage.chunk_io.open_direct`).
    direct_fd: int = -1

    def offers(self, index: int) -> bool:
        """True if chunk ``index`` may be served now (re-checks the file on disk)."""
        if self.withdrawn or index not in self.have:
            return False
        if self.signature is not None and file_signature(self.path) != self.signature:
            logger.warning("%s changed on disk: no longer serving it", self.path)
            self.withdrawn = True
            return False
        return True

    def close(self) -> None:
        self.fd = close_fd(self.fd)
        self.direct_fd = close_fd(self.direct_fd)


@attrs.define(eq=False)
class Library:
    """The files a peer holds, by file id."""

    files: dict[bytes, HeldFile] = attrs.field(factory=dict)

    def get(self, file_id: bytes) -> HeldFile | None:
        return self.files.get(file_id)

    def add(self, held: HeldFile) -> None:
        old = self.files.get(held.manifest.file_id)
        if old is not None and old is not held:
            old.close()
        self.files[held.manifest.file_id] = held

    def remove(self, file_id: bytes) -> None:
        held = self.files.pop(file_id, None)
        if held is not None:
            held.close()

    def close(self) -> None:
        for held in self.files.values():
            held.close()
        self.files.clear()


def open_published(path: pathlib.Path, manifest: Manifest, signature: tuple[int, int]) -> HeldFile:
    """A complete file to serve; ``signature`` is the (size, mtime_ns) its manifest was computed for."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error("open", path, exc) from None
    return HeldFile(manifest, path, fd, ChunkSet.full(manifest.chunk_count), signature)


def expand_paths(paths: Iterable[os.PathLike[str] | str]) -> list[pathlib.Path]:
    """Regular files named by ``paths``; a directory stands for every regular file inside it."""
    out: list[pathlib.Path] = []
    for raw in paths:
        path = pathlib.Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    child = pathlib.Path(root, name)
                    if child.is_file() and not child.is_symlink():
                        out.append(child)
        elif path.is_file():
            out.append(path)
        else:
            raise StorageError(f"{path}: no such file or directory")
    return out
