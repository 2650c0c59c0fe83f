"""ASGI app of the bench servers: our hub at ``/hub``, the plain Channels consumer at ``/channels``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.hubs import BenchHub, ChannelsBaseline  # noqa: E402
from signalr_groups.routing import websocket_path  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([websocket_path("hub", BenchHub), path("channels", ChannelsBaseline.as_asgi())]),
    }
)
