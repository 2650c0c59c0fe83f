"""ASGI application of the test project (what the live daphne serves)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from hubproject.chat.hubs import ChatHub  # noqa: E402
from signalr_groups.routing import HubHttpRouter, HubMiddlewareStack, websocket_path  # noqa: E402
from tests.hubs import InteropHub, OtherHub, ProtectedHub  # noqa: E402

websocket_urlpatterns = [
    websocket_path("interop", InteropHub),
    websocket_path("other", OtherHub),
    websocket_path("chatHub", ChatHub),
    websocket_path("protected", ProtectedHub),
]

application = ProtocolTypeRouter(
    {
        "http": HubHttpRouter(websocket_urlpatterns, django_asgi_app),
        "websocket": HubMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
