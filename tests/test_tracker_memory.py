"""The tracker's memory per idle peer (issue 16: at most 20 KB, so 10,000 peers fit in 250 MB).

Measured with tracemalloc over the real Registry and the real WHO_HAS handler,
so the figure counts every allocation they make and nothing else (no timing).
The load is ``bench/tracker.py``'s: every peer holds every one of 100 files of
1,000 chunks, half of them whole, half a few runs; then every file is asked for
as downloaders would (which once filled a cache of wire entries per replica).
"""

from __future__ import annotations

import gc
import hashlib
import random
import tracemalloc
from types import SimpleNamespace
from typing import Any, Final

from common.codec import Codec
from common.manifest import Manifest
from common.messages import WhoHas
from tracker.config import TrackerConfig
from tracker.handlers import who_has
from tracker.registry import Registry

PEERS: Final = 100
FILES: Final = 100
CHUNKS: Final = 1000
#: The registry's share of an idle peer: ~12.1 KB measured (100 complete files
#: share their file's bits; 50 partial bitfields of 125 bytes are 8 KB of it, the
#: files' holder lists 2.6 KB, its slots 0.9 KB), was 15.9 KB with a dict of slots
#: per peer (4.6 KB), and 47.7 KB before that (a Replica, a ChunkSet, a mask, a
#: slot int and a cached wire entry each). Its connection: test_tracker_idle.py.
REGISTRY_BYTES_PER_PEER: Final = 12_500


def _manifests() -> list[Manifest]:
    manifests = []
    for f in range(FILES):
        hashes = [hashlib.sha256(b"%d/%d" % (f, c)).digest() for c in range(CHUNKS)]
        manifests.append(Manifest.from_hashes(f"file-{f:03d}.bin", CHUNKS * 1024, 1024, hashes))
    return manifests


def _load(registry: Registry, manifests: list[Manifest], rng: random.Random) -> None:
    for p in range(PEERS):
        peer, _ = registry.register(p.to_bytes(20, "big"), f"10.0.{p // 250}.{p % 250}", 6881)
        for manifest in manifests:
            if (p + manifest.file_id[0]) % 2 == 0:
                ranges: tuple[tuple[int, int], ...] = ((0, CHUNKS),)
            else:  # a part: a few random runs
                cuts = sorted(rng.sample(range(CHUNKS + 1), 8))
                ranges = tuple((cuts[i], cuts[i + 1]) for i in range(0, 8, 2) if cuts[i] < cuts[i + 1])
            registry.announce(peer, manifest.file_id, ranges)


def _ask_for_everything(registry: Registry, manifests: list[Manifest]) -> None:
    """WHO_HAS for every file until every holder has been named at least once, through the real handler."""
    connection: Any = SimpleNamespace(service=SimpleNamespace(registry=registry, config=TrackerConfig()), codec=Codec(), peer_id=None)
    for manifest in manifests:
        for _ in range(PEERS // 50 * 4):
            who_has(connection, WhoHas(manifest.file_id, 50))


def test_an_idle_peer_holding_100_files_costs_the_registry_under_12_5_kb() -> None:
    rng = random.Random(1)
    manifests = _manifests()
    registry = Registry(peer_timeout=90.0, clock=lambda: 0.0, rng=rng)
    for manifest in manifests:
        registry.publish(manifest, checked=True)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _load(registry, manifests, rng)
        _ask_for_everything(registry, manifests)
        gc.collect()
        per_peer = (tracemalloc.get_traced_memory()[0] - before) / PEERS
    finally:
        tracemalloc.stop()
    assert registry.counts()["replicas"] == PEERS * FILES
    assert per_peer < REGISTRY_BYTES_PER_PEER, f"{per_peer:.0f} bytes per peer"
