"""The tracker's look-up (capability ``lookup``, PROTOCOL.md §8.9): LOOKUP, answered by FILE_LIST.

Kept apart from :mod:`common.messages`, which re-exports it (each capability
adds its messages in a module of its own, listed in ``MESSAGE_TYPES`` there).
"""

from __future__ import annotations

import string
from typing import Any, ClassVar, Final

import attrs

from common.errors import ValidationError
from common.fields import Record, int_in, text_of
from common.framing import Opcode

__all__ = ["Lookup", "MAX_LOOKUP", "is_id_prefix"]

#: The most files one LOOKUP asks for (a tracker may answer fewer).
MAX_LOOKUP: Final = 1000
#: A file id is 32 bytes: 64 hexadecimal digits.
_ID_DIGITS: Final = 64
_HEX: Final = frozenset(string.hexdigits)


def is_id_prefix(query: str) -> bool:
    """Whether ``query`` may be the start of a file id: 1 to 64 hexadecimal digits, either case."""
    return 0 < len(query) <= _ID_DIGITS and set(query) <= _HEX


def _non_empty(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not value:
        raise ValidationError(f"{attribute.name} must not be empty")


@attrs.frozen
class Lookup(Record):
    """->T: the files named exactly ``query``, and those whose id starts with ``query`` (hex), at most ``limit``."""

    OPCODE: ClassVar[Opcode] = Opcode.LOOKUP
    query: str = attrs.field(validator=[text_of(255), _non_empty])
    limit: int = attrs.field(default=100, validator=int_in(1, MAX_LOOKUP))
