"""URL helpers: one call for the negotiate view (Django urls) and one for the socket (Channels routing).

::

    # urls.py
    urlpatterns = [negotiate_path("chatHub", ChatHub), ...]
    # asgi.py
    websocket_urlpatterns = [websocket_path("chatHub", ChatHub)]
"""

from __future__ import annotations

from django.urls import URLPattern, path

from signalr_groups.consumer import HubConsumer
from signalr_groups.hub import Hub
from signalr_groups.views import access_token_view, negotiate_view

#: Hubs with a route in this project, by hub key (the admin's live-connections page lists them).
_routed_hubs: dict[str, type[Hub]] = {}


def routed_hubs() -> dict[str, type[Hub]]:
    """The hubs this project routes (``negotiate_path`` / ``websocket_path``), by hub key."""
    return dict(sorted(_routed_hubs.items()))


def _route(route: str) -> str:
    route = route.strip("/")
    if not route:
        raise ValueError("A hub route must not be empty.")
    return route


def negotiate_path(route: str, hub: type[Hub]) -> URLPattern:
    """The Django URL pattern for ``POST <route>/negotiate``."""
    _routed_hubs[hub.hub_key()] = hub
    view = negotiate_view(hub)
    return path(f"{_route(route)}/negotiate", view, name=f"signalr-negotiate-{_route(route)}")  # type: ignore[arg-type]


def websocket_path(route: str, hub: type[Hub]) -> URLPattern:
    """The Channels ``URLRouter`` pattern for the hub's WebSocket at ``<route>``."""
    _routed_hubs[hub.hub_key()] = hub
    return path(_route(route), HubConsumer.as_asgi(hub))  # type: ignore[arg-type]  # Channels routes ASGI apps


def access_token_path(route: str = "signalr/token") -> URLPattern:
    """The Django URL pattern of the access-token endpoint (``POST``; see ``access_token_view``)."""
    return path(_route(route), access_token_view, name="signalr-access-token")
