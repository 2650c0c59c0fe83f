"""The WebSocket endpoint of a hub: an ASGI application for Channels' ``URLRouter``.

It checks the Origin and the negotiate token before accepting, resolves the user identifier,
then hands the socket to a :class:`~signalr_groups.connection.HubConnection`. It is a plain
ASGI app rather than a Channels consumer class: fan-out never goes through a per-connection
channel-layer channel, so there is nothing for a consumer's dispatch to do but add a thread hop
per message.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from signalr_groups.access_tokens import access_token_expiry
from signalr_groups.conf import get_hub_settings
from signalr_groups.connection import ASGIReceive, ASGISend, HubConnection
from signalr_groups.hub import Hub
from signalr_groups.identity import bearer_from_scope, session_still_valid, token_still_valid, user_from_token
from signalr_groups.lifetime import get_manager
from signalr_groups.origin import origin_allowed
from signalr_groups.permissions import check_permissions
from signalr_groups.tokens import claim_everywhere, new_connection_id, resolve

logger = logging.getLogger(__name__)


def query_param(scope: dict[str, Any], name: str) -> str | None:
    """The first value of a query parameter, matching its name case-insensitively (as ASP.NET Core)."""
    raw = scope.get("query_string", b"")
    try:
        params = parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return None
    wanted = name.lower()
    for key, values in params.items():
        if key.lower() == wanted and values:
            return str(values[0])
    return None


async def _deny(scope: dict[str, Any], send: ASGISend, status: int, reason: str) -> None:
    """Refuse the upgrade: with ``status`` where the server supports denial responses, else 403."""
    logger.info("signalr_groups: refused a WebSocket to %s: %s %s", scope.get("path"), status, reason)
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": reason.encode()})
    else:
        await send({"type": "websocket.close", "code": 1008})


def _session_state(session: Any) -> tuple[str | None, float | None]:
    """The session key and expiry (Unix time) of a Django session (reads it: call in a thread).

    Database-backed sessions store their real expiry; ``get_expiry_date()`` would answer "now plus
    SESSION_COOKIE_AGE" for a session without a custom expiry.
    """
    key = session.session_key
    model = getattr(session, "get_model_class", None)
    if key and model is not None:
        stored = model()._default_manager.filter(session_key=key).values_list("expire_date", flat=True).first()
        if stored is not None:
            return key, stored.timestamp()
    return key, session.get_expiry_date().timestamp()


def _credential_check(kind: str | None, token: str | None, session_key: str | None, user: Any) -> Any:
    """A thread-run check that the credential still holds once the connection is registered."""
    user_pk = getattr(user, "pk", None)
    if kind == "token" and token is not None:
        return functools.partial(token_still_valid, token, user_pk)
    if kind == "session":
        return functools.partial(session_still_valid, session_key, user_pk)
    return None


class HubConsumer:
    """ASGI app serving one hub over WebSockets: ``HubConsumer.as_asgi(ChatHub)``."""

    def __init__(self, hub: type[Hub]) -> None:
        self.hub = hub

    @classmethod
    def as_asgi(cls, hub: object) -> HubConsumer:
        """Return the ASGI application for ``hub`` (for ``URLRouter``)."""
        if not (isinstance(hub, type) and issubclass(hub, Hub)):
            raise TypeError(f"HubConsumer.as_asgi() needs a Hub subclass, not {hub!r}.")
        return cls(hub)

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        """Serve one WebSocket connection."""
        if scope["type"] != "websocket":
            raise ValueError(f"{type(self).__name__} serves WebSocket connections only, not {scope['type']!r}.")
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        settings = get_hub_settings()
        hub_key = self.hub.hub_key()
        if not origin_allowed(scope):
            await _deny(scope, send, 403, "Origin not allowed.")
            return
        user = scope.get("user")
        token = bearer_from_scope(scope)
        auth_kind: str | None = None
        auth_expires_at: float | None = None
        session_key: str | None = None
        if token is not None:
            user = await user_from_token(token)
            if user is None:
                await _deny(scope, send, 401, "Invalid or expired access token.")
                return
            scope["user"] = user
            auth_kind, auth_expires_at = "token", access_token_expiry(token)
        elif getattr(user, "is_authenticated", False) and scope.get("session") is not None:
            auth_kind = "session"
            session_key, auth_expires_at = await database_sync_to_async(_session_state)(scope["session"])
        permissions = self.hub.hub_permissions()
        if permissions and not await database_sync_to_async(check_permissions)(permissions, user, self.hub, None):
            anonymous = not getattr(user, "is_authenticated", False)
            await _deny(scope, send, 401 if anonymous else 403, "Unauthorized." if anonymous else "Forbidden.")
            return
        manager = get_manager(hub_key, create=True)
        if manager is None:  # pragma: no cover - create=True always returns one
            raise RuntimeError("no lifetime manager")
        manager.hub_class = self.hub
        connection_token = query_param(scope, "id")
        if connection_token is None:
            connection_id = new_connection_id()  # skipNegotiation: the socket is the connection
        else:
            resolved = resolve(hub_key, user, connection_token, settings.negotiate_token_max_age)
            if resolved is None:
                await _deny(scope, send, 404, "No Connection with that ID")
                return
            if resolved in manager.connections:
                await _deny(scope, send, 409, "Connection ID already in use")
                return
            if not await claim_everywhere(connection_token, settings.negotiate_token_max_age):
                await _deny(scope, send, 404, "No Connection with that ID")
                return
            connection_id = resolved
        try:
            user_identifier = settings.user_id_provider(user, scope)
            if inspect.isawaitable(user_identifier):
                user_identifier = await user_identifier
        except Exception:
            logger.exception("signalr_groups: USER_ID_PROVIDER raised; refusing the connection")
            await _deny(scope, send, 500, "The server could not identify the user.")
            return
        if user_identifier is not None and not isinstance(user_identifier, str):
            user_identifier = str(user_identifier)
        await send({"type": "websocket.accept"})
        connection = HubConnection(
            hub=self.hub,
            scope=scope,
            send=send,
            settings=settings,
            connection_id=connection_id,
            user=user,
            user_identifier=user_identifier,
            manager=manager,
            account_id=str(getattr(user, "pk", "")) if getattr(user, "is_authenticated", False) else None,
            session_key=session_key,
            auth_expires_at=auth_expires_at,
            auth_kind=auth_kind,
            credential_check=_credential_check(auth_kind, token, session_key, user),
        )
        await connection.run(receive)
