"""URL helpers (``negotiate_path``, ``websocket_path``, ``access_token_path``, ``metrics_path``,
``health_paths``), ``HubHttpRouter`` and ``HubMiddlewareStack``.

See :mod:`signalr_groups.server.routing` and :mod:`signalr_groups.server.middleware`.
"""

from __future__ import annotations

from signalr_groups.server.middleware import HubMiddlewareStack
from signalr_groups.server.routing import (
    HubHttpRouter,
    access_token_path,
    health_paths,
    metrics_path,
    negotiate_path,
    routed_hubs,
    websocket_path,
)

__all__ = [
    "HubHttpRouter",
    "HubMiddlewareStack",
    "access_token_path",
    "health_paths",
    "metrics_path",
    "negotiate_path",
    "routed_hubs",
    "websocket_path",
]
