"""What the web app shares across its requests: the tracker's service (read live), the access token, the rate sampler."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Final

import attrs
import trio

from common.swarm import web_token
from tracker.web.names import NameSearch
from tracker.web.queries import CONCURRENT_SCANS

if TYPE_CHECKING:
    from tracker.service import TrackerService

__all__ = ["WebState", "RequestRate"]

#: Seconds between two samples of the request counter, and samples kept: the rate is over the last 10 s.
RATE_INTERVAL: Final = 1.0
RATE_SAMPLES: Final = 11


@attrs.define(eq=False)
class RequestRate:
    """Protocol requests per second over the last few seconds, from samples of the service's counter."""

    samples: deque[tuple[float, int]] = attrs.field(factory=lambda: deque(maxlen=RATE_SAMPLES))

    def sample(self, now: float, requests: int) -> None:
        self.samples.append((now, requests))

    def per_second(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, r0), (t1, r1) = self.samples[0], self.samples[-1]
        return round((r1 - r0) / (t1 - t0), 1) if t1 > t0 else 0.0


@attrs.define(eq=False)
class WebState:
    """One tracker's web app: reads ``service`` (its registry and counters) directly, never a copy."""

    service: TrackerService
    #: The tracker's protocol port, for the ``chunkswarm get`` command a page shows.
    protocol_port: int
    #: A private tracker's token (``common.swarm.web_token``); None: an open tracker, no login.
    token: str | None = None
    scans: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(CONCURRENT_SCANS))
    rate: RequestRate = attrs.field(factory=RequestRate)
    #: The search's index of names, following the catalogue (``tracker/web/names.py``).
    names: NameSearch = attrs.field(factory=NameSearch)
    #: HTTP connections open now (capped by ``TrackerConfig.max_http_connections``).
    http_connections: int = 0
    http_requests: int = 0
    started_wall: float = attrs.field(factory=time.time)

    @classmethod
    def create(cls, service: TrackerService, protocol_port: int) -> WebState:
        swarm = service.config.swarm
        return cls(service, protocol_port, token=None if swarm is None else web_token(swarm))

    @property
    def private(self) -> bool:
        return self.token is not None

    async def sample_rate(self) -> None:
        """Sample the request counter every :data:`RATE_INTERVAL` (runs in the web server's nursery)."""
        while True:
            self.rate.sample(trio.current_time(), self.service.requests)
            await trio.sleep(RATE_INTERVAL)
