"""The messages of identified nodes: IDENTIFY (capability ``identity``, PROTOCOL.md §8.6) and UNPUBLISH (``unpublish``, §8.7).

Kept apart from :mod:`common.messages`, which re-exports them and lists them
in ``MESSAGE_TYPES``. The handshake fields the ``identity`` capability
appends to HELLO and WELCOME (a challenge, a public key, a proof) are
declared on those messages, with :func:`empty_or_bytes_of` as their validator:
empty is their default, so a HELLO or WELCOME that leaves them out is byte
for byte what protocol 1 specified.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from common.errors import ValidationError
from common.fields import Record, bytes_of, file_id_bytes
from common.framing import Opcode

__all__ = ["Identify", "Unpublish", "empty_or_bytes_of", "PUBLIC_KEY_BYTES", "PROOF_BYTES", "CHALLENGE_BYTES"]

#: Sizes on the wire (``common/identity.py`` holds the keys): an Ed25519 public key, a signature, a challenge.
PUBLIC_KEY_BYTES = 32
PROOF_BYTES = 64
CHALLENGE_BYTES = 32


def empty_or_bytes_of(size: int) -> Any:
    """A validator: ``b""`` (the field's default: not used) or exactly ``size`` bytes."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bytes) or len(value) not in (0, size):
            raise ValidationError(f"{attribute.name} must be empty or {size} bytes")

    return check


@attrs.frozen
class Identify(Record):
    """Client -> server, right after an identity-agreeing WELCOME: its public key and its proof over the server's challenge."""

    OPCODE: ClassVar[Opcode] = Opcode.IDENTIFY
    public_key: bytes = attrs.field(validator=bytes_of(PUBLIC_KEY_BYTES))
    proof: bytes = attrs.field(validator=bytes_of(PROOF_BYTES))


@attrs.frozen
class Unpublish(Record):
    """->T: take ``file_id``, which this node published, out of the catalogue (for this publisher). Answered OK or ERROR."""

    OPCODE: ClassVar[Opcode] = Opcode.UNPUBLISH
    file_id: bytes = attrs.field(validator=file_id_bytes)
