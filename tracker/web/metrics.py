"""``/metrics``: the tracker's counters in Prometheus's text format (prometheus-client), read at each scrape.

A collector of our own on a registry of our own (not the library's global
one): each scrape reads the live service, nothing is kept up to date between
scrapes, so the protocol's fast path pays nothing for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from tracker.web.state import WebState

__all__ = ["metrics_registry", "metrics_response"]


class _TrackerCollector(Collector):
    def __init__(self, state: WebState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = self.state
        service = state.service
        counts = service.registry.counts()
        gauges = {
            "peers": ("Registered peers", counts["peers"]),
            "files": ("Files in the catalogue", counts["files"]),
            "replicas": ("Files held by peers, counted once per holder", counts["replicas"]),
            "chunk_replicas": ("Chunks held by peers, counted once per holder", counts["chunk_replicas"]),
            "connections": ("Open protocol connections", service.connections),
            "http_connections": ("Open HTTP connections to the web UI", state.http_connections),
            "requests_per_second": ("Protocol requests per second over the last 10 s", state.rate.per_second()),
            "uptime_seconds": ("Seconds since the tracker started", trio.current_time() - service.started_at),
        }
        for name, (help_text, value) in gauges.items():
            yield GaugeMetricFamily(f"chunkswarm_tracker_{name}", help_text, value=value)
        counters = {
            "requests": ("Protocol requests served", service.requests),
            "searches": ("Searches (LIST_FILES, LOOKUP and the web UI's)", service.searches.total),
            "http_requests": ("HTTP requests to the web UI and API", state.http_requests),
        }
        for name, (help_text, value) in counters.items():
            yield CounterMetricFamily(f"chunkswarm_tracker_{name}", help_text, value=value)


def metrics_registry(state: WebState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_TrackerCollector(state))
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
