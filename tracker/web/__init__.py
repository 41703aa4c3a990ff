"""A tracker's web UI, JSON API and metrics, served in the tracker's own process from its live registry.

``server`` (hypercorn's trio HTTP server, capped), ``app`` (the ASGI app),
``pages`` and ``templates/`` (HTML), ``api`` and ``openapi`` (``/api/v1``),
``metrics`` (``/metrics``), ``access`` (a private swarm's token), ``views``,
``queries`` and ``params`` (what they all show, read from the registry).
"""

from tracker.web.server import serve_web

__all__ = ["serve_web"]
