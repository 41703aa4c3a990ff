"""Node identities: a long-lived Ed25519 key pair per node, and the node id people read.

A node's **node id** is the SHA-256 of its raw 32-byte public key. On the
wire a node says who it is with its public key and proves it by signing a
fresh challenge from the other side (:func:`proof_message`); whoever checks
the signature derives the node id itself, so an id can never be claimed, only
proven. Where the protocol carries a 20-byte peer id, an identified node's
peer id is the first 20 bytes of its node id (:func:`peer_id_of`).

People see node ids as Syncthing shows device ids: base32, four groups of 13
characters each followed by a Luhn check character, written in groups of 7
(``MFZWI3D-BONSGYC-...``, 63 characters); :func:`short_id` is the first group,
enough to tell nodes apart in a log or a table. :func:`parse_node_id` reads
that form back (case, spaces and dashes forgiven; the check characters checked).

Pure: keys are held and serialized here, the files they live in are the
app's business. The cryptography package does the cryptography.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.errors import ValidationError
from common.fields import PEER_ID_SIZE

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "NONCE_SIZE",
    "NODE_ID_SIZE",
    "NodeKey",
    "node_id",
    "peer_id_of",
    "format_node_id",
    "short_id",
    "parse_node_id",
    "proof_message",
    "verify_signature",
]

PUBLIC_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
#: Size of a challenge: fresh random bytes from the side that checks a proof.
NONCE_SIZE: Final = 32
NODE_ID_SIZE: Final = 32

_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_VALUE: Final = {c: i for i, c in enumerate(_ALPHABET)}
#: Prefix of every signed proof: a signature made for chunkswarm's handshake is
#: useless anywhere else, and a later version of the proof signs another prefix.
_PROOF_CONTEXT: Final = b"chunkswarm node proof v1\x00"


def node_id(public_key: bytes) -> bytes:
    """The node id of a raw Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValidationError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
    return hashlib.sha256(public_key).digest()


def peer_id_of(public_key: bytes) -> bytes:
    """The peer id an identified node uses on the wire: its node id's first bytes."""
    return node_id(public_key)[:PEER_ID_SIZE]


def _luhn32(text: str) -> str:
    # Syncthing's check character ("luhnBase32"): factors 1, 2, 1, ... from the left.
    factor, total = 1, 0
    for char in text:
        addend = factor * _VALUE[char]
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return _ALPHABET[(32 - total % 32) % 32]


def format_node_id(identifier: bytes) -> str:
    """``identifier`` (32 bytes) as people read it: 8 groups of 7 base32 characters, check characters included."""
    if len(identifier) != NODE_ID_SIZE:
        raise ValidationError(f"a node id is {NODE_ID_SIZE} bytes, got {len(identifier)}")
    plain = base64.b32encode(identifier).decode("ascii").rstrip("=")  # 52 characters
    checked = "".join(plain[i : i + 13] + _luhn32(plain[i : i + 13]) for i in range(0, 52, 13))
    return "-".join(checked[i : i + 7] for i in range(0, 56, 7))


def short_id(identifier: bytes) -> str:
    """The first group of :func:`format_node_id`: 35 bits, enough to tell a swarm's nodes apart by eye."""
    return format_node_id(identifier)[:7]


def parse_node_id(text: str) -> bytes:
    """The 32-byte node id that ``text`` (as :func:`format_node_id` writes it) names.

    Raises :class:`ValidationError` naming what is wrong: a length, a character
    outside base32, or a check character that does not match (a typo).
    """
    cleaned = "".join(text.split()).replace("-", "").upper()
    if len(cleaned) != 56:
        raise ValidationError(f"a node id has 56 characters besides dashes, {text[:80]!r} has {len(cleaned)}")
    bad = sorted(set(cleaned) - set(_ALPHABET))
    if bad:
        raise ValidationError(f"a node id is written in A-Z and 2-7; {text[:80]!r} has {''.join(bad)!r}")
    groups = [cleaned[i : i + 14] for i in range(0, 56, 14)]
    for number, group in enumerate(groups, 1):
        if _luhn32(group[:13]) != group[13]:
            raise ValidationError(f"node id {text[:80]!r}: group {number} fails its check character (a typo?)")
    return base64.b32decode("".join(g[:13] for g in groups) + "====")


def proof_message(role: bytes, challenge: bytes, public_key: bytes) -> bytes:
    """What a node signs to prove its key: the context, its role, the other side's fresh challenge, its public key.

    ``role`` (b"client" or b"server") stops a proof made on one side from
    being replayed on the other; the challenge, chosen by the checker, makes
    every proof fresh.
    """
    if len(challenge) != NONCE_SIZE:
        raise ValidationError(f"a challenge is {NONCE_SIZE} bytes, got {len(challenge)}")
    return _PROOF_CONTEXT + role + b"\x00" + challenge + public_key


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Raise :class:`ValidationError` unless ``signature`` is ``public_key``'s over ``message``."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        raise ValidationError("a proof needs a 32-byte public key and a 64-byte signature")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise ValidationError("the signature does not match the public key") from None


@attrs.frozen(repr=False)
class NodeKey:
    """A node's private key, with its public key and node id at hand."""

    private: Ed25519PrivateKey
    public_key: bytes = attrs.field(init=False)
    node_id: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        raw = self.private.public_key().public_bytes_raw()
        object.__setattr__(self, "public_key", raw)
        object.__setattr__(self, "node_id", node_id(raw))

    def __repr__(self) -> str:  # never the private key, not even in a traceback
        return f"NodeKey({short_id(self.node_id)})"

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> NodeKey:
        """A key written by :meth:`to_pem`; :class:`ValidationError` for anything else."""
        from cryptography.hazmat.primitives import serialization  # here: 15-25 ms to import, and a get proves a fresh key

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValidationError(f"a node key is Ed25519, this one is {type(key).__name__}")
        return cls(key)

    def to_pem(self) -> bytes:
        """PKCS #8 PEM, unencrypted: the key file's own permissions protect it (0600)."""
        from cryptography.hazmat.primitives import serialization

        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    @property
    def peer_id(self) -> bytes:
        return self.node_id[:PEER_ID_SIZE]

    @property
    def display(self) -> str:
        return format_node_id(self.node_id)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def prove(self, role: bytes, challenge: bytes) -> bytes:
        """The signature over :func:`proof_message` for ``challenge``."""
        return self.sign(proof_message(role, challenge, self.public_key))
