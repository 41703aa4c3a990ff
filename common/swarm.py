"""Private swarms: the swarm file, and the proof of membership of capability ``swarm`` (PROTOCOL.md §8.8).

A **swarm file** holds what every member of a private swarm shares: a name, a
random 32-byte secret and, optionally, the node ids allowed in (then a member
needs the secret *and* an allowed key). It is text, one ``key = value`` a
line (:func:`parse_swarm_file`, :meth:`SwarmFile.serialize`); keeping it
secret (mode 0600) is the app's business, as reading and writing it is.

The proof runs inside TLS, after WELCOME (:class:`Membership`, sans-I/O):
each side sends a :class:`SwarmChallenge` (a fresh nonce and its Ed25519
public key), then a :class:`SwarmProof` over the **transcript**, which holds
the swarm name, both nonces and both keys::

    transcript = b"chunkswarm swarm v1\\x00" + name + b"\\x00" + nonce_c + nonce_s + key_c + key_s
    mac        = HMAC-SHA256(secret, role + b"\\x00" + transcript)         # role: b"client" or b"server"
    signature  = Ed25519 over proof_message(role, SHA-256(transcript), own key)   (common.identity)

``key_s`` is the public key of the server's TLS certificate (the client
checks that the server's challenge names it), so a proof made towards a man
in the middle names the middle's certificate and is worthless to the real
server; the signature proves each side holds its key, which an allow-list
needs. The client speaks first and the server proves itself only to a
client that has proven membership: a non-member learns nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from typing import Final, Literal

import attrs

from common.errors import RemoteProtocolError, ValidationError
from common.fields import PEER_ID_SIZE
from common.framing import ErrorCode
from common.identity import NodeKey, format_node_id, node_id, parse_node_id, proof_message, verify_signature
from common.swarm_messages import SwarmChallenge, SwarmProof

__all__ = ["SWARM", "SECRET_SIZE", "SwarmFile", "parse_swarm_file", "transcript", "swarm_mac", "web_token", "Membership"]

#: The capability's name (``common.capabilities.KNOWN``).
SWARM: Final = "swarm"
SECRET_SIZE: Final = 32
_CONTEXT: Final = b"chunkswarm swarm v1\x00"
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_HEADER: Final = "# chunkswarm swarm file: whoever holds it can join the swarm; keep it private (mode 0600)\n"


def _name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValidationError(f"a swarm name is 1-64 of A-Z, a-z, 0-9, '.', '_', '-', starting with a letter or digit; got {value!r}")


def _secret(instance: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != SECRET_SIZE:
        raise ValidationError(f"a swarm secret is {SECRET_SIZE} bytes")


def _ids(value: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(value)


@attrs.frozen(repr=False)
class SwarmFile:
    """A private swarm: its name, its secret and the node ids allowed in (empty: any holder of the secret)."""

    name: str = attrs.field(validator=_name)
    secret: bytes = attrs.field(validator=_secret)
    allowed: tuple[bytes, ...] = attrs.field(default=(), converter=_ids)

    def __repr__(self) -> str:  # never the secret
        return f"SwarmFile({self.name!r}, {len(self.allowed)} allowed)"

    @classmethod
    def create(cls, name: str) -> SwarmFile:
        return cls(name, os.urandom(SECRET_SIZE))

    def allow(self, identifier: bytes) -> SwarmFile:
        """This swarm with ``identifier`` (a 32-byte node id) on its list; unchanged if it is there already."""
        if len(identifier) != 32:
            raise ValidationError("a node id is 32 bytes")
        return self if identifier in self.allowed else attrs.evolve(self, allowed=(*self.allowed, identifier))

    def admits(self, identifier: bytes) -> bool:
        return not self.allowed or identifier in self.allowed

    def serialize(self) -> str:
        lines = [_HEADER, f"name = {self.name}\n", f"secret = {self.secret.hex()}\n"]
        lines += [f"allow = {format_node_id(allowed)}\n" for allowed in self.allowed]
        return "".join(lines)

    def describe(self) -> str:
        """What ``swarm show`` prints: everything but the secret."""
        allowed = "".join(f"\n  {format_node_id(allowed)}" for allowed in self.allowed)
        return f"swarm {self.name}\nallowed node ids: {len(self.allowed) or 'any holder of the secret'}{allowed}"


def parse_swarm_file(text: str) -> SwarmFile:
    """The swarm ``text`` describes; :class:`ValidationError` naming the line for anything malformed."""
    values: dict[str, str] = {}
    allowed: list[bytes] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or key not in ("name", "secret", "allow"):
            raise ValidationError(f"line {number}: expected 'name = ...', 'secret = ...' or 'allow = NODE-ID', got {raw[:60]!r}")
        if key == "allow":
            try:
                allowed.append(parse_node_id(value))
            except ValidationError as exc:
                raise ValidationError(f"line {number}: {exc}") from None
        elif key in values:
            raise ValidationError(f"line {number}: {key} is given twice")
        else:
            values[key] = value
    missing = [key for key in ("name", "secret") if key not in values]
    if missing:
        raise ValidationError(f"no {' and no '.join(missing)} line")
    try:
        secret = bytes.fromhex(values["secret"])
    except ValueError:
        raise ValidationError(f"the secret must be {2 * SECRET_SIZE} hexadecimal digits") from None
    if len(secret) != SECRET_SIZE:
        raise ValidationError(f"the secret must be {2 * SECRET_SIZE} hexadecimal digits, got {len(values['secret'])}")
    return SwarmFile(values["name"], secret, tuple(dict.fromkeys(allowed)))


def transcript(name: str, client: SwarmChallenge, server: SwarmChallenge) -> bytes:
    """What both proofs are made over: the swarm, both nonces, both keys."""
    return _CONTEXT + name.encode() + b"\x00" + client.nonce + server.nonce + client.public_key + server.public_key


def swarm_mac(secret: bytes, role: bytes, data: bytes) -> bytes:
    return hmac.new(secret, role + b"\x00" + data, hashlib.sha256).digest()


def web_token(swarm: SwarmFile) -> str:
    """The token that opens a private tracker's web UI and API (``chunkswarm swarm show`` prints it).

    Derived from the secret (HMAC, so the token does not reveal it): whoever has
    the swarm file can look at the catalogue, and the token alone lets a browser
    or a script look without being able to join the swarm.
    """
    return hmac.new(swarm.secret, b"chunkswarm web v1\x00" + swarm.name.encode(), hashlib.sha256).hexdigest()[:40]


def _refuse(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"not a member of this swarm: {reason}", error_code=ErrorCode.NOT_A_MEMBER)


Role = Literal["client", "server"]


@attrs.define(eq=False)
class Membership:
    """One side of the proof on one connection: :meth:`challenge`, :meth:`receive_challenge`, :meth:`proof`, :meth:`receive_proof`.

    The client sends its challenge, the server answers with its own; the
    client proves, the server checks and proves, the client checks. A failed
    check raises :class:`RemoteProtocolError` with code NOT_A_MEMBER.
    """

    swarm: SwarmFile
    key: NodeKey
    role: Role
    #: Client: the public key of the server's TLS certificate, which the server's challenge must name.
    certificate_key: bytes | None = None
    #: The other side's node id must start with this (a client pins the holder's peer id; empty: any).
    expected_id: bytes = b""
    #: Server: the peer id the client's HELLO claimed, which must be its node id's first bytes (empty: not checked).
    claimed_peer_id: bytes = b""
    random: Callable[[int], bytes] = os.urandom
    _mine: SwarmChallenge = attrs.field(init=False)
    _theirs: SwarmChallenge | None = attrs.field(init=False, default=None)
    #: The other side's node id, once its proof has passed.
    peer_node_id: bytes | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        if self.role == "client" and self.certificate_key is None:
            raise ValidationError("a client's proof is bound to the server's certificate key: give it")
        self._mine = SwarmChallenge(self.random(32), self.key.public_key)

    def challenge(self) -> SwarmChallenge:
        return self._mine

    def receive_challenge(self, message: object) -> None:
        if not isinstance(message, SwarmChallenge):
            raise _refuse(f"{type(message).__name__} before the proof of membership (expected SWARM_CHALLENGE)")
        if self._theirs is not None:
            raise RemoteProtocolError("SWARM_CHALLENGE sent twice", error_code=ErrorCode.BAD_REQUEST)
        if self.role == "client" and message.public_key != self.certificate_key:
            # A relay shows its own certificate, or a server claims a key it has no certificate for.
            raise _refuse("the server's challenge names a key other than its TLS certificate's")
        self._theirs = message

    def _transcript(self) -> bytes:
        if self._theirs is None:
            raise RemoteProtocolError("a SWARM_PROOF before SWARM_CHALLENGE", error_code=ErrorCode.BAD_REQUEST)
        client, server = (self._mine, self._theirs) if self.role == "client" else (self._theirs, self._mine)
        return transcript(self.swarm.name, client, server)

    def proof(self) -> SwarmProof:
        data = self._transcript()
        role = self.role.encode()
        return SwarmProof(self.key.prove(role, hashlib.sha256(data).digest()), swarm_mac(self.swarm.secret, role, data))

    def receive_proof(self, message: object) -> bytes:
        """Check the other side's proof; its node id."""
        if not isinstance(message, SwarmProof):
            raise _refuse(f"{type(message).__name__} before the proof of membership (expected SWARM_PROOF)")
        data = self._transcript()
        assert self._theirs is not None
        role = b"server" if self.role == "client" else b"client"
        if not hmac.compare_digest(message.mac, swarm_mac(self.swarm.secret, role, data)):
            raise _refuse("the proof of the swarm secret does not match (another swarm's secret, or a relay)")
        key = self._theirs.public_key
        try:
            verify_signature(key, message.signature, proof_message(role, hashlib.sha256(data).digest(), key))
        except ValidationError:
            raise _refuse("the signature does not prove the key it names") from None
        identifier = node_id(key)
        if not self.swarm.admits(identifier):
            raise _refuse(f"node id {format_node_id(identifier)} is not on the swarm's list")
        if not identifier.startswith(self.expected_id):
            raise _refuse(f"node id {format_node_id(identifier)} is not the one expected (its peer id {self.expected_id.hex()[:16]})")
        if self.claimed_peer_id and self.claimed_peer_id != identifier[:PEER_ID_SIZE]:
            raise _refuse("in a private swarm a node's peer id is its node id's first 20 bytes")
        self.peer_node_id = identifier
        return identifier
