"""The BitTorrent side's errors: a failure a client is told (``failure reason``), and a request too broken to answer."""

from __future__ import annotations

from common.errors import RemoteProtocolError, TrackerError

__all__ = ["BtFailure", "BadHttpRequest"]


class BtFailure(TrackerError):
    """An announce or scrape the tracker refuses: the client gets ``failure reason`` (BEP 3) or a UDP error (BEP 15).

    The connection stays usable: the request was well framed, only its content was refused.
    """


class BadHttpRequest(RemoteProtocolError):
    """An HTTP request that cannot be framed or understood: answered with ``status`` and the connection closed."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status
