"""WebSocket routes of the demo project."""

from __future__ import annotations

from hubproject.chat.hubs import ChatHub
from signalr_groups.routing import websocket_path

websocket_urlpatterns = [websocket_path("chatHub", ChatHub)]
