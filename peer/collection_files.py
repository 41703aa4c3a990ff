"""A collection on disk: safe paths under a folder, the state a folder keeps, and proofs a user can check later.

Paths: an entry's path is relative and checked (``common.collection.check_path``:
no '..', no absolute path, no empty or '.' segment); :func:`safe_target` also
refuses a path that would pass through a symbolic link or reach into the
folder's own state, so nothing is ever written outside the folder.

State: a folder that ``get --collection`` filled keeps, in ``STATE_DIR``, the
version it holds (``NAME.version``, its encoded bytes) and a summary
(``NAME.json``: collection, root, sequence, file count). A later get checks
that the new version follows the kept one.

Proofs: :class:`FileProof` (``common.set_proof``) is what ``chunkswarm collection proof`` writes and
``chunkswarm collection verify`` (and :func:`verify_file`) checks: one entry,
its index, the version's entry count, the inclusion proof and the chunk size
the file id was computed with. Blocking functions: call them through a thread.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Final

from common.collection import CollectionVersion, Entry, check_path, decode_version, encode_version
from common.errors import IntegrityError, StorageError, ValidationError
from common.set_proof import FileCheck, FileProof, make_proof

__all__ = ["STATE_DIR", "safe_target", "load_kept", "save_kept", "FileProof", "make_proof", "verify_file"]

#: The folder, inside a collection's folder, where ``get`` keeps what it holds; never part of a collection.
STATE_DIR: Final = ".chunkswarm-collection"
#: Bytes read at once while checking a file against its proof.
_READ: Final = 1024 * 1024


def safe_target(folder: pathlib.Path, path: str) -> pathlib.Path:
    """``folder / path``, its parent folders created; StorageError if it would leave ``folder`` (or touch its state).

    Every existing component under ``folder`` must be a real folder (the last one
    a regular file or nothing): a symbolic link anywhere is refused, whether it
    points inside or not, since it may be changed to point elsewhere.
    """
    try:
        check_path(path)
    except ValidationError as exc:
        raise StorageError(f"refusing to write {path[:200]!r}: {exc}") from None
    segments = path.split("/")
    if segments[0] == STATE_DIR:
        raise StorageError(f"refusing to write {path[:200]!r}: {STATE_DIR} is where this folder keeps its state")
    current = folder
    for segment in segments[:-1]:
        current = current / segment
        if current.is_symlink():
            raise StorageError(f"refusing to write {path!r}: {current} is a symbolic link")
        if current.exists() and not current.is_dir():
            raise StorageError(f"refusing to write {path!r}: {current} is not a folder")
        try:
            current.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {current}: {exc.strerror or exc}") from None
    target = current / segments[-1]
    if target.is_symlink():
        raise StorageError(f"refusing to write {path!r}: {target} is a symbolic link")
    if target.exists() and not target.is_file():
        raise StorageError(f"refusing to write {path!r}: {target} is not a regular file")
    return target


def _state_paths(folder: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    state = folder / STATE_DIR
    return state / f"{name}.version", state / f"{name}.json"


def load_kept(folder: pathlib.Path, name: str) -> CollectionVersion | None:
    """The version of ``name`` that ``folder`` holds, checked against its summary; None if it holds none."""
    version_path, summary_path = _state_paths(folder, name)
    if not version_path.exists():
        return None
    try:
        version = decode_version(version_path.read_bytes())
        summary = json.loads(summary_path.read_text())
    except (OSError, ValueError) as exc:
        raise StorageError(f"the state of collection {name!r} in {folder} is unreadable ({exc}); remove {folder / STATE_DIR} to start afresh") from None
    if (summary.get("collection"), summary.get("root"), summary.get("sequence"), summary.get("files")) != (
        version.name, version.root.hex(), version.sequence, len(version.entries)
    ):
        raise IntegrityError(f"the state of collection {name!r} in {folder} does not match its summary {summary_path}")
    return version


def save_kept(folder: pathlib.Path, version: CollectionVersion) -> None:
    """Keep ``version`` as the one ``folder`` holds (written to a temporary file, then renamed)."""
    version_path, summary_path = _state_paths(folder, version.name)
    summary = {"collection": version.name, "root": version.root.hex(), "sequence": version.sequence, "files": len(version.entries)}
    try:
        version_path.parent.mkdir(exist_ok=True)
        for path, data in ((version_path, encode_version(version)), (summary_path, json.dumps(summary, indent=1).encode())):
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)
    except OSError as exc:
        raise StorageError(f"cannot keep the state of {version.name!r} in {folder}: {exc.strerror or exc}") from None


def verify_file(file: os.PathLike[str] | str, proof: FileProof, root: bytes) -> Entry:
    """Check that ``file`` is the file ``proof`` names, and that its entry belongs to the version whose root is ``root``.

    ``root`` is the one the user kept (not the proof's own). Returns the entry;
    raises :class:`IntegrityError` saying which check failed (:class:`common.set_proof.FileCheck`).
    """
    check = FileCheck(proof, root)
    try:
        with open(file, "rb") as handle:
            while block := handle.read(_READ):
                check.receive_data(block)
    except OSError as exc:
        raise StorageError(f"cannot read {file}: {exc.strerror or exc}") from None
    except IntegrityError as exc:
        raise IntegrityError(f"{file}: {exc}") from None
    try:
        return check.finish()
    except IntegrityError as exc:
        raise IntegrityError(f"{file}: {exc}") from None
