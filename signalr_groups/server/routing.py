"""URL helpers: one call for the negotiate view (Django urls) and one for the socket (Channels routing).

::

    # urls.py
    urlpatterns = [negotiate_path("chatHub", ChatHub), ...]
    # asgi.py
    websocket_urlpatterns = [websocket_path("chatHub", ChatHub)]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, path

from signalr_groups.hubs.hub import Hub
from signalr_groups.server.endpoint import HubConsumer
from signalr_groups.server.negotiate import access_token_view, negotiate_view


def _route(route: str) -> str:
    route = route.strip("/")
    if not route:
        raise ValueError("A hub route must not be empty.")
    return route


def negotiate_path(route: str, hub: type[Hub]) -> URLPattern:
    """The Django URL pattern for ``POST <route>/negotiate``."""
    view = negotiate_view(hub)
    return path(f"{_route(route)}/negotiate", view, name=f"signalr-negotiate-{_route(route)}")  # type: ignore[arg-type]


def websocket_path(route: str, hub: type[Hub]) -> URLPattern:
    """The Channels ``URLRouter`` pattern for the hub's WebSocket at ``<route>``."""
    return path(_route(route), HubConsumer.as_asgi(hub))  # type: ignore[arg-type]  # Channels routes ASGI apps


def access_token_path(route: str = "signalr/token") -> URLPattern:
    """The Django URL pattern of the access-token endpoint (``POST``; see ``access_token_view``)."""
    return path(_route(route), access_token_view, name="signalr-access-token")


def _negotiated_hubs(patterns: Iterable[Any]) -> Iterator[type[Hub]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _negotiated_hubs(pattern.url_patterns)
        elif isinstance(pattern, URLPattern):
            hub = getattr(pattern.callback, "signalr_hub", None)
            if isinstance(hub, type) and issubclass(hub, Hub):
                yield hub


def routed_hubs(urlconf: str | None = None) -> dict[str, type[Hub]]:
    """The hubs with a negotiate route (``negotiate_path``) in the project's URLconf, by hub key.

    Read from the URLconf itself (no registry filled as a side effect of building patterns):
    the admin's live-connections page lists these hubs.
    """
    return dict(sorted((hub.hub_key(), hub) for hub in _negotiated_hubs(get_resolver(urlconf).url_patterns)))
