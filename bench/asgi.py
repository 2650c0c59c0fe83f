"""ASGI app of the bench servers: our hub at ``/hub``, the plain Channels consumer at ``/channels``.

The hub's HTTP transports (Server-Sent Events, long polling) are served at ``/hub`` too, through
``HubHttpRouter`` as a project wires them; every other HTTP request (negotiate) goes to Django.
The WebSocket routes stay without ``HubMiddlewareStack``, as they were (no sessions or users in the bench).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench import lagprobe  # noqa: E402
from bench.hubs import BenchHub, ChannelsBaseline  # noqa: E402
from signalr_groups.routing import HubHttpRouter, websocket_path  # noqa: E402

hub_patterns = [websocket_path("hub", BenchHub)]

application = ProtocolTypeRouter(
    {
        "http": HubHttpRouter(hub_patterns, django_asgi_app),
        "websocket": URLRouter([*hub_patterns, path("channels", ChannelsBaseline.as_asgi())]),
        "lifespan": lagprobe.lifespan,  # uvicorn: starts the loop-lag probe (BENCH_LAG_FILE) on its serving loop
    }
)
lagprobe.install()  # daphne (no lifespan): queued on the Twisted asyncio reactor's loop
