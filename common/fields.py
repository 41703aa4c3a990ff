"""Field validators and the array form of messages, with the protocol's growth rule.

Every control message, and every record nested in one (a holder, a file
entry), travels as a MessagePack array of its fields in declaration order
(``common/PROTOCOL.md`` §2). How that array may grow is decided here, once:

* a receiver needs at least the fields the message had when it was first
  specified (``REQUIRED``) and **ignores trailing fields it does not know**:
  a newer sender may append fields without breaking it;
* a field appended later has a default, and a sender leaves it out while it
  holds that default: to a receiver that predates the field, such a message
  is byte for byte what it always was. A newer field is only ever given
  another value on a connection whose handshake agreed on the capability
  that introduced it (``common/capabilities.py``).

Validators are strict about types because the values come from strangers:
each raises :class:`~common.errors.ValidationError` with a reason, which the
codec turns into a ``RemoteProtocolError``.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, ClassVar, Final

import attrs

from common.errors import ValidationError
from common.manifest import HASH_SIZE, MAX_CHUNKS

__all__ = [
    "PEER_ID_SIZE",
    "MAX_TEXT",
    "MAX_HOLDERS",
    "MAX_LIST",
    "MAX_U32",
    "Record",
    "as_tuple",
    "at_least",
]

PEER_ID_SIZE: Final = 20
MAX_TEXT: Final = 1024
MAX_HOLDERS: Final = 1000
MAX_LIST: Final = 100_000
MAX_U32: Final = 2**32 - 1


# ---------------------------------------------------------------------------
# Validators: strict about types because the values may come off the wire.
# ---------------------------------------------------------------------------
def int_in(low: int, high: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValidationError(f"{attribute.name} must be an integer in {low}..{high}, got {value!r}")

    return check


def bytes_of(size: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bytes) or len(value) != size:
            raise ValidationError(f"{attribute.name} must be {size} bytes")

    return check


def text_of(max_length: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or len(value) > max_length:
            raise ValidationError(f"{attribute.name} must be text of at most {max_length} characters")

    return check


@functools.lru_cache(maxsize=1024)
def _is_ip_address(value: str) -> bool:
    # Cached: a HOLDERS reply names the same few addresses over and over (10,000 WHO_HAS of a
    # folder sync spent most of a second in ipaddress parsing "127.0.0.1"); bounded, so a peer
    # sending ever new addresses only churns it.
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def ip_address_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not _is_ip_address(value):
        shown = f" {value[:64]!r}" if isinstance(value, str) else ""
        raise ValidationError(f"{attribute.name}{shown} is not an IP address" if shown else f"{attribute.name} must be an IP address")


def seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86_400:
        raise ValidationError(f"{attribute.name} must be 0..86400 seconds, got {value!r}")


def chunk_ranges(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_CHUNKS:
        raise ValidationError(f"{attribute.name} must be a list of at most {MAX_CHUNKS} ranges")
    previous_stop = 0
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2 and type(item[0]) is int and type(item[1]) is int):
            raise ValidationError(f"{attribute.name} must hold [start, stop] integer pairs")
        start, stop = item
        if not previous_stop <= start < stop <= MAX_CHUNKS:
            raise ValidationError(f"{attribute.name} must be ascending, disjoint, non-empty ranges within 0..{MAX_CHUNKS}")
        previous_stop = stop


def tuple_of(kind: type, max_items: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple) or len(value) > max_items or not all(isinstance(v, kind) for v in value):
            raise ValidationError(f"{attribute.name} must be at most {max_items} {kind.__name__} items")

    return check


def to_tuple(value: object) -> object:
    # Lists are accepted for convenience; anything else is left for the validator to refuse.
    return tuple(value) if isinstance(value, list) else value


def pairs_converter(value: object) -> object:
    # The decoder hands over tuples of tuples (the usual case, one new chunk): keep them.
    if type(value) is tuple and all(type(v) is tuple for v in value):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


file_id_bytes = bytes_of(HASH_SIZE)
peer_id_bytes = bytes_of(PEER_ID_SIZE)
u16 = int_in(0, 0xFFFF)
u32 = int_in(0, MAX_U32)
port_number = int_in(1, 0xFFFF)
chunk_index = int_in(0, MAX_CHUNKS - 1)


# ---------------------------------------------------------------------------
# Arrays of fields
# ---------------------------------------------------------------------------
class Record:
    """The array form of an attrs class: its fields in declaration order, with the growth rule above.

    ``REQUIRED`` is the number of leading fields every sender sends (``None``:
    all of them). Fields after it were added later: they have defaults and
    are left out while they hold them.
    """

    REQUIRED: ClassVar[int | None] = None

    def to_fields(self) -> list[Any]:
        fields = attrs.fields(type(self))  # type: ignore[arg-type]  # every Record subclass is an attrs class
        values = [getattr(self, a.name) for a in fields]
        required = self.REQUIRED
        if required is not None:
            while len(values) > required and values[-1] == fields[len(values) - 1].default:
                values.pop()
        return values

    @classmethod
    def from_fields(cls, fields: tuple[Any, ...]) -> Any:
        known = len(cls.__attrs_attrs__)  # type: ignore[attr-defined]  # attrs.fields(cls), minus its checks
        if len(fields) != known:
            required = known if cls.REQUIRED is None else cls.REQUIRED
            if len(fields) < required:
                raise ValidationError(f"{cls.__name__} needs {required} fields, got {len(fields)}")
            fields = fields[:known]  # trailing fields of a newer sender: not ours to read
        return cls(*fields)


def as_tuple(value: object) -> tuple[Any, ...]:
    """A nested array as a tuple; anything else is a violation."""
    if not isinstance(value, (tuple, list)):
        raise ValidationError(f"expected a list, got {type(value).__name__}")
    return tuple(value)


def at_least(cls: type, fields: tuple[Any, ...], count: int) -> tuple[Any, ...]:
    """The first ``count`` of ``fields`` (more are a newer sender's, and ignored); fewer are a violation."""
    if len(fields) < count:
        raise ValidationError(f"{cls.__name__} needs {count} fields, got {len(fields)}")
    return fields[:count]
