"""``HubMiddlewareStack``: Channels' ``AuthMiddlewareStack`` with a clear answer when the database cannot.

Channels' session and auth middleware read the database before a hub's endpoint runs. While the
database is locked or unreachable that read raises, and the socket gets a bare server error or
nothing at all. Under ``HubMiddlewareStack`` the upgrade is refused with ``503`` and a text that
says to retry (daphne, which cannot send a status, answers 403), as negotiate does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.auth import AuthMiddlewareStack
from django.db import DatabaseError

from signalr_groups.server.endpoint import Refusal, deny

logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

UNAVAILABLE = "The server's database is unavailable; retry."


class DatabaseOutageGuard:
    """Answers 503 when the database fails before the application answered (a WebSocket upgrade or an HTTP request)."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Run the inner application; a database error before ``websocket.accept`` becomes a 503 refusal."""
        accepted = False

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message.get("type") in (
                "websocket.accept",
                "websocket.close",
                "websocket.http.response.start",
                "http.response.start",
            ):
                accepted = True
            await send(message)

        watching_send.__wrapped__ = send  # type: ignore[attr-defined]  # the server's own send, for flow control
        try:
            await self.inner(scope, receive, watching_send)
        except DatabaseError:
            if scope.get("type") not in ("websocket", "http") or accepted:
                raise
            logger.warning("signalr_groups: refused %s: the database is unavailable", scope.get("path"))
            if scope["type"] == "http":
                body = UNAVAILABLE.encode()
                headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1")]
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            else:
                await deny(scope, send, Refusal(503, UNAVAILABLE))


def HubMiddlewareStack(inner: ASGIApp) -> DatabaseOutageGuard:
    """``AuthMiddlewareStack(inner)`` behind a :class:`DatabaseOutageGuard`: use it for the hubs' routes."""
    return DatabaseOutageGuard(AuthMiddlewareStack(inner))
