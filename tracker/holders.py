"""Which holders a WHO_HAS names: a window of a file's holder list, which is a random permutation.

Pure and synchronous, used by ``Registry.holder_slots``. The registry keeps
each file's holders in random order (a newcomer takes a random slot, its
occupant moves to the end), so N consecutive slots from a random start are N
holders at random, chosen with one random number instead of N.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

__all__ = ["holder_window"]


def holder_window(count: int, limit: int, mine: int, rng: random.Random) -> Sequence[int]:
    """Up to ``limit`` slots of ``count`` at random, never ``mine`` (the asker's slot, or -1).

    Consecutive slots from a random start, wrapping: a ``range`` when they
    are one run without ``mine`` (a WHO_HAS answer is then one slice of the
    file's parts), else a list.
    """
    others = count - (mine >= 0)
    if others <= limit:
        # All of them, rotated from a random start: every downloader sees its own
        # first holders, so a swarm of a few dozen does not all pick the same few
        # (issue 16: half the downloaders never uploaded). One random number, as below.
        start = rng.randrange(count) if count else 0
        return [i for i in itertools.chain(range(start, count), range(start)) if i != mine]
    # A window of consecutive slots from a random start, as opentracker answers: every
    # other holder is equally likely to be in it, and choosing costs one random number
    # instead of ``limit`` (a sample was the largest part of a WHO_HAS). One slot more
    # is taken in case the asker is in it.
    start = rng.randrange(count)
    stop = start + limit + (mine >= 0)
    if stop <= count and not start < mine < stop - 1:  # one run of slots (WHO_HAS: one slice)
        return range(start + (mine == start), stop - (mine >= 0 and mine != start))
    window = [*range(start, min(stop, count)), *range(max(0, stop - count))]
    if mine >= 0:
        if mine in window:
            window.remove(mine)
        else:
            window.pop()
    return window
