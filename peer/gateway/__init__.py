"""The peer's HTTP gateway: files this peer holds, or fetches from the swarm on demand, served over HTTP.

``headers`` (Range, ETag, names; pure), ``body`` (verified bytes from disk),
``fetches`` (downloads on demand), ``files`` (file responses), ``sets``,
``set_versions`` and ``set_upload`` (/api/v1/sets), ``app`` (the Starlette app), ``server``
(hypercorn's trio worker beside the peer: :func:`serve_gateway`).
"""

from peer.gateway.server import GatewayConfig, serve_gateway
from peer.gateway.set_upload import SetWrites

__all__ = ["GatewayConfig", "SetWrites", "serve_gateway"]
