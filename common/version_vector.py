"""Version vectors: tuples of (8-byte short node id, counter) pairs sorted by node id (PROTOCOL.md §8.11).

What decides whether two changes of one file are ordered or concurrent. Pure: no I/O.
"""

from __future__ import annotations

from typing import Final, Literal

from common.errors import ValidationError

__all__ = ["SHORT_NODE_SIZE", "VersionVector", "check_vector", "fixed_bytes", "vv_bump", "vv_merge", "vv_compare"]

#: A node in a version vector or ``modified_by``: the first 8 bytes of its node id.
SHORT_NODE_SIZE: Final = 8
_INT_MAX: Final = (1 << 63) - 1

VersionVector = tuple[tuple[bytes, int], ...]


def fixed_bytes(value: object, what: str, size: int) -> bytes:
    """Check that ``value`` is ``size`` bytes (as it came off the wire); return it."""
    if type(value) is not bytes:
        raise ValidationError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) != size:
        raise ValidationError(f"{what} must be {size} bytes, got {len(value)}")
    return value


def _node(value: object) -> bytes:
    return fixed_bytes(value, "a version vector's node", SHORT_NODE_SIZE)


def check_vector(vv: object) -> VersionVector:
    """Check a version vector as it came off the wire; return it."""
    if type(vv) is not tuple:
        raise ValidationError(f"a version vector is a tuple, got {type(vv).__name__}")
    previous = b""
    for pair in vv:
        if type(pair) is not tuple or len(pair) != 2:
            raise ValidationError("a version vector holds (node, counter) pairs")
        node = _node(pair[0])
        counter = pair[1]
        if type(counter) is not int:  # bool is an int too: refused
            raise ValidationError(f"a version vector's counter must be an integer, got {type(counter).__name__}")
        if not 1 <= counter <= _INT_MAX:
            raise ValidationError(f"a version vector's counter must be in 1..{_INT_MAX}, got {counter}")
        if node <= previous:
            raise ValidationError("a version vector is sorted by node, each node once")
        previous = node
    return vv


def vv_bump(vv: VersionVector, node: bytes) -> VersionVector:
    """``vv`` with ``node``'s counter one higher (1 if it had none)."""
    _node(node)
    counts = dict(vv)
    counts[node] = counts.get(node, 0) + 1
    return tuple(sorted(counts.items()))


def vv_merge(a: VersionVector, b: VersionVector) -> VersionVector:
    """The least vector at or after both: each node's higher counter."""
    counts = dict(a)
    for node, counter in b:
        counts[node] = max(counts.get(node, 0), counter)
    return tuple(sorted(counts.items()))


def vv_compare(a: VersionVector, b: VersionVector) -> Literal["equal", "before", "after", "concurrent"]:
    """How ``a`` stands to ``b``: equal, before (``b`` saw all of ``a`` and more), after, or concurrent."""
    left, right = dict(a), dict(b)
    nodes = left.keys() | right.keys()
    behind = any(left.get(node, 0) < right.get(node, 0) for node in nodes)
    ahead = any(left.get(node, 0) > right.get(node, 0) for node in nodes)
    if behind and ahead:
        return "concurrent"
    if behind:
        return "before"
    if ahead:
        return "after"
    return "equal"
