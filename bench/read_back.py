"""What checking written chunks costs: a download's writes with and without ``verify_writes``, side by side.

    python bench/read_back.py [--size-mib 512] [--chunk-size 1048576] [--runs 3]

Each run writes a file of random bytes chunk by chunk as a download does
(``verify_and_write``: SHA-256 of the chunk, then ``pwrite``; ``ReadBack.wrote``
after each, the page cache paced by the default windows; ``finish`` at the end),
in one thread, into a fresh part file, once without the read-back (the default)
and once with it (``get --verify-writes``), alternating which goes first.
Printed per mode (medians): ``cpu_s_per_gib`` (the thread's user + system CPU),
``seconds``, and ``read_back_cpu_s_per_gib``: what the read-back adds. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.manifest import build_manifest  # noqa: E402
from peer.config import PeerConfig  # noqa: E402
from peer.storage.chunk_io import verify_and_write  # noqa: E402
from peer.storage.part_file import PartFile  # noqa: E402
from peer.storage.read_back import ReadBack  # noqa: E402

GIB = 2**30


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def one_run(source: pathlib.Path, data: bytes, chunk_size: int, work: pathlib.Path, verify: bool) -> tuple[float, float]:
    """(CPU-s, seconds) to write ``data`` as a download would."""
    manifest = build_manifest(source, chunk_size)
    out = work / ("verify" if verify else "plain")
    shutil.rmtree(out, ignore_errors=True)
    defaults = PeerConfig()
    part = PartFile(manifest, out / manifest.name)
    part.open()
    try:
        read_back = ReadBack(manifest, part.fd, defaults.read_back_window, part.direct_fd, defaults.cache_window, verify=verify)
        view = memoryview(data)
        cpu, start = thread_cpu(), time.monotonic()
        for index in range(manifest.chunk_count):
            offset = manifest.chunk_offset(index)
            chunk = view[offset : offset + manifest.chunk_length(index)]
            verify_and_write(manifest, part.fd, index, chunk)
            assert read_back.wrote(index, chunk) == []
        assert read_back.finish() == []
        read_back.close()
        return thread_cpu() - cpu, time.monotonic() - start
    finally:
        part.close()
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=2**20)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="chunkswarm-read-back-"))
    try:
        source = work / "data.bin"
        data = os.urandom(options.size_mib * 2**20)
        source.write_bytes(data)
        figures: dict[str, list[tuple[float, float]]] = {"default": [], "verify_writes": []}
        for run in range(options.runs):
            modes = [False, True] if run % 2 == 0 else [True, False]
            for verify in modes:
                figures["verify_writes" if verify else "default"].append(one_run(source, data, options.chunk_size, work, verify))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gib = options.size_mib / 1024
    result: dict[str, object] = {"size_mib": options.size_mib, "runs": options.runs, "loadavg": os.getloadavg()}
    for mode, values in figures.items():
        result[mode] = {"cpu_s_per_gib": round(statistics.median(cpu for cpu, _ in values) / gib, 3),
                        "seconds": round(statistics.median(seconds for _, seconds in values), 2)}  # fmt: skip
    verify_cpu = result["verify_writes"]["cpu_s_per_gib"]  # type: ignore[index]
    default_cpu = result["default"]["cpu_s_per_gib"]  # type: ignore[index]
    result["read_back_cpu_s_per_gib"] = round(verify_cpu - default_cpu, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
