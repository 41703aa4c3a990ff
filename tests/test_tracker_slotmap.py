"""tracker/slotmap.py: a sorted array standing for a dict of file seq -> slot; checked against a dict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.slotmap import SlotMap

_keys = st.integers(0, 40)
_ops = st.lists(st.tuples(st.sampled_from(["set", "del", "get"]), _keys, st.integers(0, 2**32 - 1)), max_size=60)


@given(_ops)
def test_a_slotmap_answers_as_a_dict_does(ops: list[tuple[str, int, int]]) -> None:
    slots, model = SlotMap(), {}
    for op, key, slot in ops:
        if op == "set":
            slots[key] = model[key] = slot
        elif op == "del" and key in model:
            del slots[key], model[key]
        assert slots.get(key) == model.get(key) and slots.get(key, -1) == model.get(key, -1)
        assert (key in slots) == (key in model)
    assert list(slots.items()) == sorted(model.items()) and len(slots) == len(model)


def test_missing_keys_and_values_that_do_not_fit() -> None:
    slots = SlotMap()
    slots[3] = 2**32 - 1
    with pytest.raises(KeyError):
        slots[4]
    with pytest.raises(KeyError):
        del slots[2]
    with pytest.raises(OverflowError):
        slots[5] = 2**32
    with pytest.raises(OverflowError):
        slots[1] = -1
    with pytest.raises(OverflowError):  # refused, not mixed with another key
        slots[2**32] = 1
    assert list(slots.items()) == [(3, 2**32 - 1)]  # as it was
    for key, _ in slots.items():  # over a copy: changing the map meanwhile is safe
        del slots[key]
    assert len(slots) == 0 and slots.get(3) is None
