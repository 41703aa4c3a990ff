"""How fast a sync node's receiving side puts small fetched files in place, without the network: one file at a time against batches.

    python bench/sync_write.py [--files 5000] [--dir /dev/shm] [--dir /var/tmp] [--no-fsync]

``--files`` files of 1-20 KB in 100 folders are written into a fresh folder
under each ``--dir``, in batches of 64 (what ``peer/sync/fetch.py`` hands the
applier), twice side by side: ``per_file`` does what the applier did per file
(``write_atomic``, the one-chunk manifest, a descriptor opened beneath the
folder to serve it from), ``batch`` does what it does now
(``fsops.write_batch`` and a :class:`HeldFile` on the descriptor written
through). Then each deletes the files again (``remove_file`` per file against
``remove_batch``). The last line printed is one JSON object: files per second
per variant and directory, and the machine's load averages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from peer.sync.beneath import Folders, Root, open_file
from peer.sync.fsops import Stat, remove_batch, remove_file, write_atomic, write_batch
from peer.sync.local import single_chunk_manifest

_BATCH = 64


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data[:64]).digest()  # the ids are not checked here: hashing is no part of what is measured


def _files(count: int) -> list[tuple[str, bytes]]:
    rng = random.Random(7)
    return [(f"dir{n % 100:03d}/file{n:05d}.bin", rng.randbytes(rng.randint(1000, 20_000))) for n in range(count)]


def _per_file(root: Root, batch: list[tuple[str, bytes]], fsync: bool) -> dict[str, Stat]:
    stats = {}
    for path, data in batch:
        stat = write_atomic(root, path, data, None, mtime_ns=1_700_000_000_000_000_000, mode=0o644, fsync=fsync)
        single_chunk_manifest(path, len(data), _digest(data))
        with Folders(root) as folders:
            os.close(open_file(folders, path))
        stats[path] = stat
    return stats


def _batched(check: Root, batch: list[tuple[str, bytes]], fsync: bool) -> dict[str, Stat]:
    written = write_batch(check, [(path, data, None, 1_700_000_000_000_000_000, 0o644) for path, data in batch], fsync=fsync)
    stats = {}
    for (path, data), result in zip(batch, written, strict=True):
        assert not isinstance(result, Exception), result
        single_chunk_manifest(path, len(data), _digest(data))
        os.close(result.fd)
        stats[path] = result.stat
    return stats


def _run(base: pathlib.Path, files: list[tuple[str, bytes]], variant: str, fsync: bool) -> dict[str, float]:
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"sync-write-{variant}-", dir=base))
    try:
        started = time.perf_counter()
        stats: dict[str, Stat] = {}
        check = Root(root)
        for at in range(0, len(files), _BATCH):
            batch = files[at : at + _BATCH]
            stats.update(_per_file(check, batch, fsync) if variant == "per_file" else _batched(check, batch, fsync))
        wrote = time.perf_counter() - started
        started = time.perf_counter()
        if variant == "per_file":
            for path, _data in files:
                remove_file(check, path, stats[path])
        else:
            results = remove_batch(check, [(path, stats[path]) for path, _data in files])
            assert not any(results), results
        removed = time.perf_counter() - started
        assert not any(root.iterdir())
        check.close()
        return {"write_files_per_s": round(len(files) / wrote), "delete_files_per_s": round(len(files) / removed)}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--dir", action="append", default=None)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    files = _files(args.files)
    out: dict[str, object] = {"files": args.files, "fsync": not args.no_fsync, "load_before": os.getloadavg()}
    for base in args.dir or ["/dev/shm", tempfile.gettempdir()]:
        for variant in ("per_file", "batch"):
            out[f"{base}:{variant}"] = _run(pathlib.Path(base), files, variant, not args.no_fsync)
            print(variant, base, out[f"{base}:{variant}"], file=sys.stderr)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
