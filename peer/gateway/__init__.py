"""The peer's HTTP gateway: files this peer holds, or fetches from the swarm on demand, served over HTTP.

``headers`` (Range, ETag, names; pure), ``body`` (verified bytes from disk),
``fetches`` (downloads on demand), ``app`` (the Starlette app), ``server``
(hypercorn's trio worker beside the peer: :func:`serve_gateway`).
"""

from peer.gateway.server import GatewayConfig, serve_gateway

__all__ = ["GatewayConfig", "serve_gateway"]
