"""A download's part file: ``NAME.part``, its resume state ``NAME.part.state``, and its final placement.

Crash safety of a download without an fsync per chunk: the state file lists a
chunk only after its ``pwrite`` has returned, it is replaced atomically
(write a temporary file, then ``os.replace``), and on resume every chunk it
lists is hashed again, so a part file truncated or corrupted by a power cut
is never trusted blindly.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib

import attrs

from common.chunkset import ChunkSet
from common.errors import StorageError, ValidationError
from common.manifest import Manifest
from peer.storage.chunk_io import advise, hash_chunks, open_direct
from peer.storage.fs import atomic_write, close_fd, memory_backed, storage_error

__all__ = ["PartFile", "same_content", "place_file", "PART_SUFFIX", "STATE_SUFFIX"]

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"
STATE_SUFFIX = ".state"
_STATE_VERSION = 1
#: Far more than the state of the largest file (2**18 ranges of a few bytes each):
#: a file larger than this is not ours to parse.
_MAX_STATE_BYTES = 16 * 1024 * 1024


@attrs.define(eq=False)
class PartFile:
    """``NAME.part`` in the output directory, with its resume state in ``NAME.part.state``."""

    manifest: Manifest
    final_path: pathlib.Path
    fd: int = -1
    #: Open a second, ``O_DIRECT`` descriptor (see :func:`open_direct` and ``PeerConfig.direct_io``).
    direct_io: bool = False
    #: An ``O_DIRECT`` descriptor on the part file for chunk writes and checks, or -1.
    direct_fd: int = -1

    @property
    def path(self) -> pathlib.Path:
        return self.final_path.with_name(self.final_path.name + PART_SUFFIX)

    @property
    def state_path(self) -> pathlib.Path:
        return self.final_path.with_name(self.final_path.name + PART_SUFFIX + STATE_SUFFIX)

    def open(self, *, force: bool = False) -> list[int]:
        """Open (or create and preallocate) the part file; return the chunks the resume state claims.

        A part file or resume state already there is ours only if the state is
        readable and names this very file (id and chunk size): anything else
        is someone else's file, and a :class:`StorageError` unless ``force``
        (then it is replaced). A fresh download writes its (empty) state
        before it creates the part file, so a part file of ours always has one.
        """
        claimed = self._read_state(force=force)
        flags = os.O_RDWR | os.O_CREAT
        try:
            self.final_path.parent.mkdir(parents=True, exist_ok=True)
            if claimed is None:
                self.save_state(ChunkSet(self.manifest.chunk_count))
                flags |= os.O_TRUNC
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise storage_error("create", self.path, exc) from None
        try:
            st = os.fstat(self.fd)
            size = st.st_size
            # Disk full is reported now, not after minutes of downloading.
            vfs = os.fstatvfs(self.fd)
            free = vfs.f_bavail * vfs.f_frsize
            needed = self.manifest.size - min(st.st_blocks * 512, self.manifest.size)
            if needed > free:
                raise OSError(errno.ENOSPC, f"disk full: {needed} bytes needed, {free} free")
            if size != self.manifest.size:
                os.ftruncate(self.fd, self.manifest.size)
            if hasattr(os, "posix_fallocate") and self.manifest.size and not memory_backed(self.fd):
                # Reserve the blocks (and measured faster writes than into a sparse file); not on
                # tmpfs, where it zeroes every page first, which costs more than it saves.
                try:
                    os.posix_fallocate(self.fd, 0, self.manifest.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                        raise
        except OSError as exc:
            self.close()
            raise storage_error("preallocate", self.path, exc) from None
        self.direct_fd = open_direct(self.path) if self.direct_io else -1
        # Chunks are read whole, in no useful order (sent to peers, read back): readahead
        # would only fill pages of chunks not written yet, or dropped on purpose (ReadBack).
        advise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)
        # Chunks entirely beyond a truncated file cannot be there.
        return [i for i in claimed or () if i < self.manifest.chunk_count and size >= self.manifest.chunk_offset(i) + self.manifest.chunk_length(i)]

    def _read_state(self, *, force: bool) -> list[int] | None:
        """The chunks our resume state lists (None: start afresh); :class:`StorageError` for files in the way that are not ours."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            if self.path.exists():
                self._not_ours(force, "there is no resume state beside it")
            return None
        except OSError as exc:
            self._not_ours(force, f"its resume state cannot be read ({exc.strerror or exc})")
            return None
        try:
            if len(raw) > _MAX_STATE_BYTES:
                raise ValueError(f"{len(raw)} bytes, more than any resume state")
            state = json.loads(raw)
            if state.get("version") != _STATE_VERSION or state.get("file_id") != self.manifest.hex_id or state.get("chunk_size") != self.manifest.chunk_size:
                self._not_ours(force, "its resume state is of another file")
                return None
            done = ChunkSet.from_ranges(self.manifest.chunk_count, tuple(tuple(r) for r in state["done"]))
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError, RecursionError) as exc:
            # RecursionError: JSON nested deeper than the parser goes.
            self._not_ours(force, f"its resume state is unreadable ({exc})")
            return None
        return list(done) if self.path.exists() else None

    def _not_ours(self, force: bool, why: str) -> None:
        """``NAME.part`` (or its state) is in the way and not of this download: refused, or replaced with ``force``."""
        shown = self.path if self.path.exists() else self.state_path
        if not force:
            raise StorageError(f"{shown} is in the way: it is not a download of {self.manifest.name} in progress ({why}); "
                               "nothing was changed (use --force to replace it)")  # fmt: skip
        logger.warning("replacing %s, not a download of %s in progress (%s): --force", shown, self.manifest.name, why)

    def save_state(self, done: ChunkSet) -> None:
        """Record ``done`` (chunks already written) atomically."""
        state = {
            "version": _STATE_VERSION,
            "file_id": self.manifest.hex_id,
            "name": self.manifest.name,
            "size": self.manifest.size,
            "chunk_size": self.manifest.chunk_size,
            "done": [list(r) for r in done.ranges()],
        }
        try:
            atomic_write(self.state_path, json.dumps(state).encode())
        except OSError as exc:
            raise storage_error("save download state", self.state_path, exc) from None

    def close(self) -> None:
        self.fd = close_fd(self.fd)
        self.direct_fd = close_fd(self.direct_fd)

    def discard_state(self) -> None:
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass


def same_content(path: pathlib.Path, manifest: Manifest) -> bool:
    """True if ``path`` already holds exactly the file of ``manifest`` (blocking)."""
    try:
        if os.stat(path).st_size != manifest.size:
            return False
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return len(hash_chunks(manifest, fd, range(manifest.chunk_count))) == manifest.chunk_count
    finally:
        os.close(fd)


def place_file(part: pathlib.Path, final: pathlib.Path, manifest: Manifest, *, force: bool) -> None:
    """Move the verified part file to ``final`` atomically.

    Never replaces a different existing file unless ``force``; an existing
    identical file is kept and the part file dropped.
    """
    try:
        if force:
            os.replace(part, final)
            return
        try:
            os.link(part, final)  # fails if final exists: no window where another file is overwritten
        except FileExistsError:
            if same_content(final, manifest):
                os.unlink(part)
                return
            raise StorageError(f"{final} already exists with other content (use --force to overwrite it)") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP):
                raise
            if final.exists():
                if same_content(final, manifest):
                    os.unlink(part)
                    return
                raise StorageError(f"{final} already exists with other content (use --force to overwrite it)") from None
            os.replace(part, final)
            return
        os.unlink(part)
    except OSError as exc:
        raise storage_error("move into place", final, exc) from None
