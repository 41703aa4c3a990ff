"""TLS 1.3 for private swarms (PROTOCOL.md §8.8): a node's certificate is self-signed by its node key; no authority.

A server shows a certificate whose public key is its Ed25519 node key
(:func:`certificate_for`); the client reads that key from the certificate
(:func:`certificate_key`) and binds its proof of membership to it
(``common.swarm``). Nothing here trusts an authority: whom to trust is
decided by the proof inside TLS, and by the node id a client pins.

The client shows no certificate: the standard library's ``ssl`` can only
accept a client certificate that chains to an authority it was given (it has
no verification callback), so the client's key is proven inside TLS instead,
by its signature over the transcript, which names the server's certificate key.

The contexts are built once per node. The one piece of I/O here is forced by
``ssl``: ``load_cert_chain`` reads the certificate and key from files only, so
they pass through a private temporary directory that is removed at once.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from common.errors import ValidationError
from common.identity import NodeKey, format_node_id

__all__ = ["certificate_for", "certificate_key", "server_context", "client_context"]


def certificate_for(key: NodeKey) -> bytes:
    """A self-signed certificate (PEM) for ``key``: subject = issuer = the node id, valid for ever (RFC 5280 §4.1.2.5)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, format_node_id(key.node_id))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private.public_key())
        .serial_number(int.from_bytes(key.node_id[:16], "big") >> 1 or 1)
        .not_valid_before(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC))
        .sign(key.private, None)
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def certificate_key(der: bytes | None) -> bytes:
    """The raw Ed25519 public key of a certificate (DER); :class:`ValidationError` for any other certificate."""
    if not der:
        raise ValidationError("the other side showed no TLS certificate")
    try:
        public = x509.load_der_x509_certificate(der).public_key()
    except ValueError as exc:
        raise ValidationError(f"the other side's TLS certificate does not parse: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ValidationError(f"the other side's TLS certificate holds a {type(public).__name__}, not an Ed25519 node key")
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _tls13(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # No session tickets: every connection proves membership afresh, and a server
    # would otherwise send tickets the client never uses.
    context.options |= ssl.OP_NO_TICKET
    return context


def server_context(key: NodeKey) -> ssl.SSLContext:
    """The TLS 1.3 server side of a node: its certificate; clients are not asked for one (see the module docstring)."""
    context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    with tempfile.TemporaryDirectory(prefix="chunkswarm-tls-") as folder:  # 0700, removed at once
        cert, private = Path(folder, "cert.pem"), Path(folder, "key.pem")
        cert.write_bytes(certificate_for(key))
        private.write_bytes(key.to_pem())
        context.load_cert_chain(cert, private)
    return context


def client_context() -> ssl.SSLContext:
    """The TLS 1.3 client side: no authority and no host name; the server's key is checked by the proof and pinned."""
    context = _tls13(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
