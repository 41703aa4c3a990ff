"""Throughput of ``common.manifest.hash_file`` on a generated file with a warm page cache.

    .venv/bin/python bench/hash.py [--size-mib 1024] [--chunk-size 1048576] [--repeat 3]

Writes a file of ``--size-mib`` MiB under ``--dir`` (default /tmp), hashes it once
to warm the page cache, then times ``--repeat`` runs and reports the fastest.
Progress goes to stderr; the last line of stdout is one JSON object:
``mib_per_s``, ``seconds``, ``bytes``, ``chunk_size`` (plus ``runs`` and, for
comparison, ``sha256_mib_per_s``: hashlib alone over an in-memory buffer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from common.manifest import chunk_size_for, hash_file

MIB = 1024 * 1024
WRITE_BLOCK = 16 * MIB


def write_file(path: str, size: int) -> None:
    block = os.urandom(WRITE_BLOCK)  # content does not change SHA-256's speed; one random block, repeated
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            remaining -= handle.write(block[: min(remaining, WRITE_BLOCK)])


def sha256_baseline(chunk_size: int, total: int = 256 * MIB) -> float:
    buffer = os.urandom(chunk_size)
    rounds = max(1, total // chunk_size)
    start = time.perf_counter()
    for _ in range(rounds):
        hashlib.sha256(buffer).digest()
    return rounds * chunk_size / MIB / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--chunk-size", type=int, default=chunk_size_for(1 << 30), help="bytes per chunk (default 1 MiB, a 1 GiB file's)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the fastest is reported (default 3)")
    parser.add_argument("--dir", default="/tmp", help="where to write the file (default /tmp)")
    args = parser.parse_args()

    size = args.size_mib * MIB
    handle, path = tempfile.mkstemp(prefix="chunkswarm-hash-", suffix=".bin", dir=args.dir)
    os.close(handle)
    try:
        print(f"writing {args.size_mib} MiB to {path}", file=sys.stderr)
        write_file(path, size)
        hash_file(path, args.chunk_size)  # warm the page cache
        runs = []
        for _ in range(max(1, args.repeat)):
            start = time.perf_counter()
            hashed, hashes = hash_file(path, args.chunk_size)
            runs.append(time.perf_counter() - start)
            assert hashed == size and len(hashes) == -(-size // args.chunk_size)
            print(f"run {len(runs)}: {runs[-1]:.3f} s", file=sys.stderr)
    finally:
        os.unlink(path)
    best = min(runs)
    print(
        json.dumps(
            {
                "mib_per_s": round(size / MIB / best, 1),
                "seconds": round(best, 4),
                "bytes": size,
                "chunk_size": args.chunk_size,
                "runs": [round(run, 4) for run in runs],
                "sha256_mib_per_s": round(sha256_baseline(args.chunk_size), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
