"""common/identity.py: node ids as people read them, keys and the proofs they sign."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from common.errors import ValidationError
from common.identity import (
    NONCE_SIZE,
    NodeKey,
    format_node_id,
    node_id,
    parse_node_id,
    peer_id_of,
    proof_message,
    short_id,
    verify_signature,
)


@given(st.binary(min_size=32, max_size=32))
def test_a_node_id_reads_back_from_its_printed_form(identifier: bytes) -> None:
    text = format_node_id(identifier)
    assert len(text) == 63 and text.count("-") == 7
    assert parse_node_id(text) == identifier
    assert parse_node_id(text.lower().replace("-", " ")) == identifier
    assert short_id(identifier) == text[:7]


@given(st.binary(min_size=32, max_size=32), st.integers(0, 62), st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
def test_a_single_typo_is_caught_by_the_check_characters(identifier: bytes, position: int, replacement: str) -> None:
    text = format_node_id(identifier)
    if text[position] in "-" + replacement:
        return
    typo = text[:position] + replacement + text[position + 1 :]
    with pytest.raises(ValidationError, match="check character"):  # Luhn mod 32 catches every single substitution
        parse_node_id(typo)


def test_syncthing_vector() -> None:
    # The device id Syncthing's documentation uses for its own check-character scheme:
    # the same alphabet and check rule, so it must parse.
    text = "MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAD"
    assert format_node_id(parse_node_id(text)) == text


@pytest.mark.parametrize(
    "text, reason",
    [
        ("MFZWI3D", "56 characters"),
        ("MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWA1", "A-Z and 2-7"),
        ("MFZWI3D-BONSGYC-YLTMRWG-C43ENR5-QXGZDMM-FZWI3DP-BONSGYY-LTMRWAE", "group 4 fails"),
    ],
)
def test_bad_node_ids_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_node_id(text)


def test_a_key_proves_itself_and_nothing_else() -> None:
    key, other = NodeKey.generate(), NodeKey.generate()
    challenge = bytes(range(NONCE_SIZE))
    proof = key.prove(b"client", challenge)
    verify_signature(key.public_key, proof, proof_message(b"client", challenge, key.public_key))
    for public, role, nonce in (
        (other.public_key, b"client", challenge),  # someone else's key
        (key.public_key, b"server", challenge),  # replayed in the other role
        (key.public_key, b"client", bytes(NONCE_SIZE)),  # another challenge
    ):
        with pytest.raises(ValidationError, match="does not match"):
            verify_signature(public, proof, proof_message(role, nonce, public))
    assert key.node_id == node_id(key.public_key) and key.peer_id == peer_id_of(key.public_key)
    assert "PRIVATE" not in repr(key) and short_id(key.node_id) in repr(key)


def test_keys_round_trip_through_pem_and_other_keys_are_refused() -> None:
    key = NodeKey.generate()
    assert NodeKey.from_pem(key.to_pem()).node_id == key.node_id
    with pytest.raises(ValidationError, match="not a PEM"):
        NodeKey.from_pem(b"garbage")
    ecdsa = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValidationError, match="Ed25519"):
        NodeKey.from_pem(ecdsa)


def test_sizes_are_checked() -> None:
    with pytest.raises(ValidationError):
        node_id(b"short")
    with pytest.raises(ValidationError):
        proof_message(b"client", b"short", bytes(32))
    with pytest.raises(ValidationError):
        verify_signature(bytes(32), b"short", b"")
