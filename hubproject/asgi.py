"""ASGI entry point: the hub on every transport (behind session auth), other HTTP requests to Django."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hubproject.settings")
django_asgi_app = get_asgi_application()  # before importing anything that touches models

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from hubproject.routing import websocket_urlpatterns  # noqa: E402
from signalr_groups.routing import HubHttpRouter, HubMiddlewareStack  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The hub's Server-Sent Events and long polling at its path; every other request to Django.
        "http": HubHttpRouter(websocket_urlpatterns, ASGIStaticFilesHandler(django_asgi_app)),
        "websocket": HubMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)
