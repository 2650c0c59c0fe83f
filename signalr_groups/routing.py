"""URL helpers (``negotiate_path``, ``websocket_path``, ``access_token_path``); see :mod:`signalr_groups.server.routing`."""

from __future__ import annotations

from signalr_groups.server.routing import access_token_path, negotiate_path, routed_hubs, websocket_path

__all__ = ["access_token_path", "negotiate_path", "routed_hubs", "websocket_path"]
