"""Cost of the chunk picker's operations for a large file.

    .venv/bin/python bench/picker.py [--chunks 500000] [--peers 8]

Each peer holds a random ~75 % of the chunks. The last line of stdout is one
JSON object, milliseconds per operation: ``add_peer`` (set_peer_chunks for a new
peer), ``first_pick`` (a peer's first pick, which builds its pick order),
``pick_cycle`` (pick + on_data + on_verified, steady state), ``availability_change``
(a peer announces one more chunk) and ``availability_change_then_pick``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from common.chunkset import ChunkSet
from peer.picker import Picker


def per_call_ms(fn: Callable[[int], object], repeat: int) -> float:
    start = time.perf_counter()
    for i in range(repeat):
        fn(i)
    return round((time.perf_counter() - start) / repeat * 1e3, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\\n\\n")[0])
    parser.add_argument("--chunks", type=int, default=500_000)
    parser.add_argument("--peers", type=int, default=8)
    args = parser.parse_args()
    count, peers = args.chunks, args.peers
    rng = random.Random(1)
    picker: Picker[int] = Picker(count, rng=random.Random(2))
    masks = [(rng.getrandbits(count) | rng.getrandbits(count)) for _ in range(peers)]
    figures = {"chunks": count, "peers": peers}
    figures["add_peer_ms"] = per_call_ms(lambda i: picker.set_peer_chunks(i, ChunkSet(count, masks[i])), peers)
    figures["first_pick_ms"] = per_call_ms(picker.pick, peers)

    def cycle(i: int) -> None:
        key = i % peers
        index = picker.pick(key)
        if index is not None:
            picker.on_data(key, index)
            picker.on_verified(key, index)

    def change(i: int) -> None:
        key = i % peers
        missing = ~masks[key] & ((1 << count) - 1)
        masks[key] |= missing & -missing
        picker.set_peer_chunks(key, ChunkSet(count, masks[key]))

    def change_then_pick(i: int) -> None:
        change(i)
        cycle(i)

    figures["pick_cycle_ms"] = per_call_ms(cycle, 2000)
    figures["availability_change_ms"] = per_call_ms(change, 50)
    figures["availability_change_then_pick_ms"] = per_call_ms(change_then_pick, 50)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
