"""UDP connection ids (BEP 15) that need no state: a keyed hash of the client's address and a time bucket.

A connect request proves nothing, so whatever it costs the tracker must be
nothing: the id handed out is the first 8 bytes of BLAKE2b keyed with a
secret of this process, over the client's address and the number of the
current ``lifetime``-second bucket. An announce or scrape is answered only
when its id is the one for its source address in the current or the previous
bucket, so an id is good for between one and two lifetimes (BEP 15: a client
uses one for a minute, a tracker accepts it for two) and a forged or spoofed
source address cannot produce one without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

__all__ = ["ConnectionIds"]


class ConnectionIds:
    """Issues and checks connection ids for ``(host, port)``; the clock is injected."""

    __slots__ = ("_key", "_lifetime", "_clock")

    def __init__(self, clock: Callable[[], float], lifetime: float = 60.0, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)
        self._lifetime = lifetime
        self._clock = clock

    def _id(self, host: str, port: int, bucket: int) -> bytes:
        message = b"%s|%d|%d" % (host.encode(), port, bucket)
        return hashlib.blake2b(message, key=self._key, digest_size=8).digest()

    def issue(self, host: str, port: int) -> bytes:
        return self._id(host, port, int(self._clock() // self._lifetime))

    def valid(self, connection_id: bytes, host: str, port: int) -> bool:
        bucket = int(self._clock() // self._lifetime)
        return hmac.compare_digest(connection_id, self._id(host, port, bucket)) or hmac.compare_digest(
            connection_id, self._id(host, port, bucket - 1)
        )
