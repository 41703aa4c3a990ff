"""The messages of capability ``swarm`` (PROTOCOL.md §8.8): SWARM_CHALLENGE and SWARM_PROOF.

Sent only inside TLS, on a connection whose agreement includes ``swarm``,
right after WELCOME; :mod:`common.swarm` says what they carry and checks it.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from common.fields import Record, bytes_of
from common.framing import Opcode

__all__ = ["SwarmChallenge", "SwarmProof"]


@attrs.frozen
class SwarmChallenge(Record):
    """Each side, once: a fresh 32-byte nonce for the other side's proof, and the sender's Ed25519 public key."""

    OPCODE: ClassVar[Opcode] = Opcode.SWARM_CHALLENGE
    nonce: bytes = attrs.field(validator=bytes_of(32))
    public_key: bytes = attrs.field(validator=bytes_of(32))


@attrs.frozen
class SwarmProof(Record):
    """Each side, once: the sender's signature and the swarm's HMAC over the transcript of both challenges."""

    OPCODE: ClassVar[Opcode] = Opcode.SWARM_PROOF
    signature: bytes = attrs.field(validator=bytes_of(64))
    mac: bytes = attrs.field(validator=bytes_of(32))
