"""URL helpers: one call for the negotiate view (Django urls) and one for the hub's endpoint (ASGI routing).

::

    # urls.py
    urlpatterns = [negotiate_path("chatHub", ChatHub), ...]
    # asgi.py
    hub_urlpatterns = [websocket_path("chatHub", ChatHub)]
    application = ProtocolTypeRouter({
        # Server-Sent Events and long polling at the hubs' paths; every other request to Django.
        "http": HubHttpRouter(hub_urlpatterns, django_asgi_app),
        "websocket": HubMiddlewareStack(URLRouter(hub_urlpatterns)),
    })
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver, path

from signalr_groups.auth.origin import cors_headers, listed_origin
from signalr_groups.hubs.hub import Hub
from signalr_groups.server import ops
from signalr_groups.server.endpoint import HubConsumer
from signalr_groups.server.http_endpoint import HubHttpEndpoint
from signalr_groups.server.middleware import ASGIApp, HubMiddlewareStack
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


class HubHttpRouter:
    """The ``"http"`` application: each hub's HTTP transports at its path, every other request to ``fallback``.

    ``patterns`` are the hubs' :func:`websocket_path` patterns (the same list the ``"websocket"``
    router uses), so a hub is served at one path on every transport. A hub's requests pass
    through :func:`HubMiddlewareStack` (sessions and users); the others reach ``fallback``
    (Django's ASGI application) untouched.
    """

    def __init__(self, patterns: Iterable[Any], fallback: ASGIApp) -> None:
        self.fallback = fallback
        self._routes: list[tuple[Any, HubHttpEndpoint, ASGIApp]] = []
        for pattern in patterns:
            hub = getattr(getattr(pattern, "callback", None), "hub", None)
            if not isinstance(pattern, URLPattern) or not (isinstance(hub, type) and issubclass(hub, Hub)):
                raise TypeError(f"HubHttpRouter takes websocket_path() patterns, not {pattern!r}.")
            endpoint = HubHttpEndpoint(hub)
            self._routes.append((pattern.pattern, endpoint, HubMiddlewareStack(endpoint)))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Route one HTTP request."""
        path = str(scope.get("path", ""))
        root = str(scope.get("root_path", ""))
        if root and path.startswith(root):
            path = path[len(root) :]
        path = path.lstrip("/")
        for pattern, endpoint, app in self._routes:
            if pattern.match(path) is not None:
                origin = _origin(scope)
                if scope.get("method") == "OPTIONS" and listed_origin(origin) is not None:
                    await _preflight(send, origin)
                    return
                headers = cors_headers(origin)
                if headers:
                    send = _with_headers(send, headers)
                # An established connection's poll or POST skips the session and auth middleware.
                if not await endpoint.serve_established(scope, receive, send):
                    await app(scope, receive, send)
                return
        await _call_cancellably(self.fallback, scope, receive, send)


async def _call_cancellably(app: ASGIApp, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Call ``app``; if this call is cancelled, cancel the tasks ``app`` left waiting on ``receive``.

    The server cancels a request's application when it shuts down (daphne: "Killed N pending
    application instances"). Django's ``ASGIHandler`` then leaves its ``listen_for_disconnect``
    task behind, which later receives ``http.disconnect``, raises ``RequestAborted`` and is logged
    as "Task exception was never retrieved" with a traceback. Cancelling the tasks that wait on
    this request's ``receive`` ends them quietly.
    """
    waiting: set[asyncio.Task[Any]] = set()

    async def receiving() -> Any:
        task = asyncio.current_task()
        if task is not None:
            waiting.add(task)
        try:
            return await receive()
        finally:
            waiting.discard(task)

    try:
        await app(scope, receiving, send)
    except asyncio.CancelledError:
        for task in list(waiting):
            task.cancel()
        raise


def _origin(scope: dict[str, Any]) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"origin":
            return bytes(value).decode("latin-1")
    return None


async def _preflight(send: Any, origin: str | None) -> None:
    """Answer a listed origin's CORS preflight for the hub's path."""
    headers = [(name.lower().encode(), value.encode("latin-1")) for name, value in cors_headers(origin, preflight=True)]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _with_headers(send: Any, headers: list[tuple[str, str]]) -> Any:
    """``send`` that adds ``headers`` to the response start (CORS for a listed origin)."""
    extra = [(name.lower().encode(), value.encode("latin-1")) for name, value in headers]

    async def sending(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    sending.__wrapped__ = send  # type: ignore[attr-defined]  # the server's own send, for flow control
    return sending


def metrics_path(route: str = "signalr/metrics") -> URLPattern:
    """A URL pattern for the Prometheus metrics (staff, or ``METRICS_ALLOWED_ADDRESSES``)."""
    return path(_route(route), ops.metrics_view, name="signalr-metrics")


def health_paths(prefix: str = "signalr/health") -> list[URLPattern]:
    """URL patterns for ``<prefix>/ready`` (readiness: 200 or 503 with a JSON reason) and ``<prefix>/live``."""
    base = _route(prefix).rstrip("/")
    return [
        path(f"{base}/ready", ops.readiness_view, name="signalr-ready"),
        path(f"{base}/live", ops.liveness_view, name="signalr-live"),
    ]


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
