"""The version a collection refusal names travels as ``ERROR.sequence`` (PROTOCOL.md §8.11), not in its wording.

The codec: the field is appended by the growth rule (left out at 0, so every
other ERROR is byte for byte what it was; a receiver from before it ignores
it). The client: ``check_publish_reply`` and ``fetch_following`` take the
number from the field, and read the message only from a tracker that does
not send it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.capabilities import COLLECTIONS
from common.codec import NEED_DATA, Codec, encode_message
from common.collection import CollectionVersion
from common.collection_messages import CollectionReply, GetCollection
from common.errors import CollectionConflict
from common.fields import Record
from common.framing import ErrorCode
from common.messages import Error, Message
from peer.collections import check_publish_reply, fetch_following
from tests.test_collection_pruning import chain


def _decoded(wire: bytes) -> Any:
    codec = Codec()
    codec.receive_data(wire)
    message = codec.next_event()
    assert codec.next_event() is NEED_DATA
    return message


@given(st.integers(0, 0xFFFF), st.text(max_size=200), st.integers(0, 2**63 - 1))
def test_the_sequence_round_trips_and_is_left_out_at_zero(code: int, text: str, sequence: int) -> None:
    message = Error(code, text, sequence)
    wire = encode_message(message)
    assert _decoded(wire) == message
    fields = msgpack.unpackb(wire[8:])
    assert fields == ([code, text, sequence] if sequence else [code, text])
    if not sequence:
        assert wire == encode_message(Error(code, text))


@attrs.frozen
class _ErrorBefore(Record):
    """ERROR as a receiver from before ``sequence`` has it: two fields."""

    REQUIRED: ClassVar[int | None] = None
    code: int
    message: str


def test_old_and_new_receivers_read_each_other() -> None:
    with_field = msgpack.unpackb(encode_message(Error(ErrorCode.VERSION_PRUNED, "pruned", 8))[8:])
    assert _ErrorBefore.from_fields(tuple(with_field)) == _ErrorBefore(ErrorCode.VERSION_PRUNED, "pruned")
    assert Error.from_fields((ErrorCode.VERSION_PRUNED, "pruned")) == Error(ErrorCode.VERSION_PRUNED, "pruned", 0)
    assert Error.from_fields((1, "x", 3, "a field of a later sender")) == Error(1, "x", 3)


@pytest.mark.parametrize("bad", [-1, 2**63, True, 1.5, "8", b"8"])
def test_the_sequence_is_type_checked(bad: object) -> None:
    payload = msgpack.packb([ErrorCode.VERSION_PRUNED, "pruned", bad])
    codec = Codec()
    codec.receive_data(bytes.fromhex("4353017f") + len(payload).to_bytes(4, "big") + payload)
    with pytest.raises(Exception, match="sequence"):
        codec.next_event()


# -- the client -----------------------------------------------------------------------
def test_a_conflict_names_the_current_version_in_its_field() -> None:
    mine = chain("p", 6)[-1]
    with pytest.raises(CollectionConflict) as conflict:
        check_publish_reply(Error(ErrorCode.COLLECTION_CONFLICT, "another version came first", 9), mine)
    assert conflict.value.current_sequence == 9  # (the old code read the message: 5, its own guess)
    # A tracker from before the field: its wording, else the guess (the version before this node's).
    with pytest.raises(CollectionConflict) as conflict:
        check_publish_reply(Error(ErrorCode.COLLECTION_CONFLICT, "collection 'p' is at version 7: a stale parent"), mine)
    assert conflict.value.current_sequence == 7
    with pytest.raises(CollectionConflict) as conflict:
        check_publish_reply(Error(ErrorCode.COLLECTION_CONFLICT, "worded otherwise"), mine)
    assert conflict.value.current_sequence == 5


@attrs.define
class _Tracker:
    """A tracker's collection replies, with versions before ``oldest`` pruned and refused with ``refusal``."""

    versions: list[CollectionVersion]
    oldest: int
    refusal: Any
    asked: list[int] = attrs.field(factory=list)

    def speaks(self, name: str) -> bool:
        return name == COLLECTIONS

    async def request_many(self, messages: list[Message]) -> list[Message]:
        replies: list[Message] = []
        for message in messages:
            assert isinstance(message, GetCollection)
            number = message.sequence or len(self.versions)
            self.asked.append(number)
            replies.append(self.refusal(number) if number < self.oldest else CollectionReply(self.versions[number - 1]))
        return replies


@pytest.mark.parametrize(
    "refusal",
    [
        lambda asked: Error(ErrorCode.VERSION_PRUNED, "pruned here", 8),
        lambda asked: Error(ErrorCode.VERSION_PRUNED, f"collection 'p' keeps versions from 8 on: version {asked} was pruned"),
    ],
    ids=["field", "wording-of-a-tracker-before-it"],
)
async def test_a_walk_goes_on_from_the_oldest_version_kept(refusal: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "peer.collections")
    versions = chain("p", 10)
    tracker = _Tracker(versions, 8, refusal)
    assert await fetch_following(tracker, "p", versions[1]) == versions[9]  # type: ignore[arg-type]
    assert tracker.asked == [10, 3, 4, 5, 6, 7, 8, 9, 8, 9]  # the walk went on from 8 (the old code: from 10, with "pruned here")
    assert "versions 3 to 7 were pruned on the tracker; version 8 is signed by" in caplog.text
