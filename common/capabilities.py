"""Capabilities: the optional features the two sides of a connection agree on in HELLO/WELCOME.

A capability is a name and a version (``common/PROTOCOL.md`` §8). The client
offers, in HELLO, every optional feature it speaks with the highest version it
speaks; the server answers, in WELCOME, the **agreement**: each offered
capability it speaks too, at the lower of the two versions. Both sides then
use exactly the agreed features at exactly the agreed versions, so a feature
is used only when both speak it, and nothing either side does not know is
ever used. A capability one side does not know is not an error: the server
leaves it out of the agreement.

On the wire a set of capabilities is an array of ``[name, version]`` pairs,
sorted by name; here it is a tuple of ``(name, version)`` tuples (plain values,
as the codec packs them), built from any mapping or pairs by
:func:`capabilities_converter`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from common.errors import ValidationError

__all__ = [
    "MAX_CAPABILITIES",
    "Capabilities",
    "capabilities_converter",
    "capabilities_validator",
    "agree",
    "check_agreement",
    "WITHDRAW",
    "IDENTITY",
    "UNPUBLISH",
    "LOOKUP",
    "COLLECTIONS",
    "KNOWN",
]

#: At most this many capabilities in one HELLO or WELCOME.
MAX_CAPABILITIES: Final = 64
#: A name: lower case, starting with a letter, then letters, digits, '.', '-' or '_'; at most 32 characters.
_NAME: Final = re.compile(r"[a-z][a-z0-9._-]{0,31}\Z")

#: ``(name, version)`` pairs, sorted by name, names unique.
Capabilities = tuple[tuple[str, int], ...]

#: ``withdraw`` (PROTOCOL.md §8.5): the WITHDRAW message, and a registration bound to its connection.
WITHDRAW: Final = "withdraw"
#: ``identity`` (PROTOCOL.md §8.6): both sides prove their node keys in the handshake (IDENTIFY).
IDENTITY: Final = "identity"
#: ``unpublish`` (PROTOCOL.md §8.7): UNPUBLISH, from an identified publisher.
UNPUBLISH: Final = "unpublish"
#: ``lookup`` (PROTOCOL.md §8.9): the LOOKUP message, and listings that say how many files they left out.
LOOKUP: Final = "lookup"
#: ``collections`` (PROTOCOL.md §8.10): signed collection versions: PUBLISH_COLLECTION, GET_COLLECTION, WATCH_COLLECTION.
COLLECTIONS: Final = "collections"

#: Every capability defined so far, with the highest version this code speaks,
#: so that one place says what exists (each later feature adds its line here
#: and its section to PROTOCOL.md §8). A connection that agrees on none speaks
#: protocol 1 as first specified.
KNOWN: Final[Mapping[str, int]] = {WITHDRAW: 1, IDENTITY: 1, UNPUBLISH: 1, "swarm": 1, LOOKUP: 1, COLLECTIONS: 1}  # swarm: PROTOCOL.md §8.8, common/swarm.py


def capabilities_converter(value: object) -> object:
    """A mapping or pairs (lists or tuples) as sorted ``(name, version)`` tuples; anything else is left for the validator.

    An entry longer than a pair comes from a newer sender (the growth rule of
    ``common/fields.py``): its trailing values are ignored.
    """
    if isinstance(value, Mapping):
        items: Iterable[Any] = value.items()
    elif isinstance(value, (tuple, list)):
        items = value
    else:
        return value
    pairs = []
    for item in items:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            return value  # refused by the validator, with its reason
        pairs.append((item[0], item[1]))
    try:
        return tuple(sorted(pairs))
    except TypeError:  # names of mixed types cannot be sorted: the validator says why
        return tuple(pairs)


def capabilities_validator(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or len(value) > MAX_CAPABILITIES:
        raise ValidationError(f"{attribute.name} must be at most {MAX_CAPABILITIES} [name, version] pairs")
    names = set()
    for item in value:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ValidationError(f"{attribute.name} must hold [name, version] pairs")
        name, version = item
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValidationError(f"capability name {str(name)[:40]!r} must be 1-32 of a-z, 0-9, '.', '-', '_', starting with a letter")
        if type(version) is not int or not 0 <= version <= 0xFFFF:
            raise ValidationError(f"capability {name} must have a version in 0..65535, got {version!r}")
        if name in names:
            raise ValidationError(f"capability {name} is listed twice")
        names.add(name)


def agree(offered: Capabilities, supported: Mapping[str, int]) -> Capabilities:
    """The server's answer: every offered capability it supports, at the lower of the two versions."""
    return tuple((name, min(version, supported[name])) for name, version in offered if name in supported)


def check_agreement(offered: Capabilities, agreed: Capabilities) -> None:
    """Refuse an answer that agrees on what was not offered, or at a higher version than offered."""
    mine = dict(offered)
    for name, version in agreed:
        if name not in mine:
            raise ValidationError(f"the server agreed on capability {name}, which was not offered")
        if version > mine[name]:
            raise ValidationError(f"the server agreed on {name} version {version}, above the {mine[name]} offered")
