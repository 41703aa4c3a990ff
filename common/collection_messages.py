"""The messages of collections (capability ``collections``, PROTOCOL.md §8.10).

PUBLISH_COLLECTION carries a signed version to the tracker; GET_COLLECTION and
WATCH_COLLECTION ask for the current one, answered by COLLECTION. A version
travels as one binary field, its :func:`common.collection.encode_version`
bytes, decoded (and so validated, entry by entry) with the message. Kept apart
from :mod:`common.messages`, which re-exports them and lists them in
``MESSAGE_TYPES``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import attrs

from common.collection import CollectionVersion, decode_version, encode_version
from common.errors import ValidationError
from common.fields import Record, at_least, int_in, seconds, text_of
from common.framing import Opcode
from common.identity_messages import empty_or_bytes_of
from common.manifest import HASH_SIZE, check_publishable_name

__all__ = ["PublishCollection", "GetCollection", "WatchCollection", "CollectionReply", "MAX_WATCH"]

#: The longest a tracker holds a WATCH_COLLECTION before it answers "no change" (PROTOCOL.md §8.10).
MAX_WATCH: Final = 25.0


def _collection_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise ValidationError(f"{attribute.name} must be text")
    check_publishable_name(value)


def _version_bytes(fields: tuple[Any, ...]) -> bytes:
    data = fields[0]
    if not isinstance(data, bytes):
        raise ValidationError("a collection version travels as bytes")
    return data


@attrs.frozen
class PublishCollection:
    """->T: make ``version`` the collection's current version; OK, or ERROR COLLECTION_CONFLICT / NOT_AN_OWNER / UNKNOWN_FILE."""

    OPCODE: ClassVar[Opcode] = Opcode.PUBLISH_COLLECTION
    version: CollectionVersion = attrs.field(validator=attrs.validators.instance_of(CollectionVersion))

    def to_fields(self) -> list[Any]:
        return [encode_version(self.version)]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> PublishCollection:
        return cls(decode_version(_version_bytes(at_least(cls, fields, 1))))


@attrs.frozen
class GetCollection(Record):
    """->T: the current version of collection ``name`` (or version ``sequence``): COLLECTION, or ERROR UNKNOWN_COLLECTION."""

    OPCODE: ClassVar[Opcode] = Opcode.GET_COLLECTION
    REQUIRED: ClassVar[int] = 1
    name: str = attrs.field(validator=[text_of(255), _collection_name])
    #: 0: the current version; n: version n, which the tracker keeps (a client checks the chain of owners from one it kept).
    sequence: int = attrs.field(default=0, validator=int_in(0, 2**63 - 1))


@attrs.frozen
class WatchCollection(Record):
    """->T: COLLECTION as soon as ``name``'s root differs from ``known_root`` (empty: none known), else an empty COLLECTION after ``wait`` s."""

    OPCODE: ClassVar[Opcode] = Opcode.WATCH_COLLECTION
    name: str = attrs.field(validator=[text_of(255), _collection_name])
    known_root: bytes = attrs.field(default=b"", validator=empty_or_bytes_of(HASH_SIZE))
    wait: float = attrs.field(default=MAX_WATCH, validator=seconds)  # the tracker waits at most MAX_WATCH


@attrs.frozen
class CollectionReply:
    """T->: a collection's current version; ``None`` (an empty field) answers a WATCH_COLLECTION that saw no change."""

    OPCODE: ClassVar[Opcode] = Opcode.COLLECTION
    version: CollectionVersion | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.instance_of(CollectionVersion))
    )

    def to_fields(self) -> list[Any]:
        return [b"" if self.version is None else encode_version(self.version)]

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> CollectionReply:
        data = _version_bytes(at_least(cls, fields, 1))
        return cls(decode_version(data) if data else None)


