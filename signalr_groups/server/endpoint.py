"""The WebSocket endpoint of a hub: an ASGI application for Channels' ``URLRouter``.

It checks the Origin, the credentials, the hub's permissions and the negotiate token before
accepting, resolves the user identifier, then hands the socket to a
:class:`~signalr_groups.server.connection.HubConnection`. It is a plain ASGI app rather than a
Channels consumer class: fan-out never goes through a per-connection channel-layer channel, so
there is nothing for a consumer's dispatch to do but add a thread hop per message.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from signalr_groups.auth.connection_tokens import new_connection_id, resolve_token
from signalr_groups.auth.credentials import Credentials, InvalidAccessTokenError, credentials_from_scope
from signalr_groups.auth.origin import origin_allowed
from signalr_groups.auth.permissions import check_permissions
from signalr_groups.backplane.claims import ClaimUnavailableError, claim_everywhere
from signalr_groups.conf import HubSettings, get_hub_settings
from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime import gc_policy
from signalr_groups.lifetime.managers import get_manager
from signalr_groups.server import shutdown
from signalr_groups.server.connection import ASGIReceive, ASGISend, HubConnection
from signalr_groups.server.flow import FlowControl, flow_control_for, unwrap_send
from signalr_groups.server.socket_bridge import bridge_socket
from signalr_groups.server.uvicorn_socket import uvicorn_flow_control

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


def _flow_control(receive: ASGIReceive, send: ASGISend) -> FlowControl:
    """What the connection needs of the server that accepted the socket (see :mod:`.flow`, :mod:`.uvicorn_socket`)."""
    gc_policy.check_server(getattr(unwrap_send(send), "__self__", None), get_hub_settings().gc_freeze_connections)
    return uvicorn_flow_control(send) or flow_control_for(receive, send)


class Refusal(Exception):
    """The upgrade is refused with ``status`` and ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def deny(scope: dict[str, Any], send: ASGISend, refusal: Refusal) -> None:
    """Refuse the upgrade: with the status where the server supports denial responses, else 403."""
    logger.info("signalr_groups: refused a WebSocket to %s: %s %s", scope.get("path"), refusal.status, refusal.reason)
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": refusal.status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": refusal.reason.encode()})
    else:
        await send({"type": "websocket.close", "code": 1008})


@dataclass(frozen=True, slots=True)
class Target:
    """The connection a new socket is for: a new one (``connection_id``), or one to resume here or elsewhere."""

    connection_id: str
    #: Whether the client negotiated stateful reconnect.
    stateful: bool
    #: A connection of this process waiting for this client (stateful reconnect).
    local: HubConnection | None = None
    #: The connection may live on another process (stateful reconnect, bridged).
    remote: bool = False


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
        del message  # (this frame lasts as long as the connection: it keeps only what it needs)
        settings = get_hub_settings()
        shutdown.install()
        try:
            if shutdown.draining():
                raise Refusal(503, "The server is shutting down; connect again.")
            if "WebSockets" not in settings.transports_for(self.hub.hub_key()):
                raise Refusal(404, "WebSockets transport not supported by this end point type")
            credentials = await self.authenticate(scope)
            target = await self._connection_id(scope, settings, credentials)
            user_identifier = await self.user_identifier(scope, settings, credentials)
            if target.local is not None and target.local.user_identifier != user_identifier:
                raise Refusal(404, "No Connection with that ID")
            if target.remote and not await bridge_socket(
                self.hub.hub_key(), target.connection_id, user_identifier, receive, send
            ):
                raise Refusal(404, "No Connection with that ID")
        except Refusal as refusal:
            await deny(scope, send, refusal)
            return
        if target.remote:
            return  # served by bridge_socket: the connection lives on another process
        if target.local is not None:
            # Stateful reconnect: the client's new socket takes its connection over.
            await send({"type": "websocket.accept"})
            await target.local.resume(receive, send, _flow_control(receive, send))
            return
        connection_id, stateful_token = target.connection_id, target.stateful
        manager = get_manager(self.hub.hub_key(), create=True)
        if manager is None:  # pragma: no cover - create=True always returns one
            raise RuntimeError("no lifetime manager")
        await send({"type": "websocket.accept"})
        connection = HubConnection(
            flow=_flow_control(receive, send),
            hub=self.hub,
            scope=scope,
            send=send,
            settings=settings,
            connection_id=connection_id,
            credentials=credentials,
            user_identifier=user_identifier,
            manager=manager,
            stateful_token=stateful_token,
        )
        del target
        await connection.run(receive)

    async def authenticate(self, scope: dict[str, Any]) -> Credentials:
        """The Origin check, the credentials, and the hub's permissions (raises :class:`Refusal`)."""
        if not origin_allowed(scope):
            raise Refusal(403, "Origin not allowed.")
        try:
            credentials = await credentials_from_scope(scope)
        except InvalidAccessTokenError as exc:
            raise Refusal(401, str(exc)) from exc
        user = credentials.user
        permissions = self.hub.hub_permissions()
        if permissions and not await database_sync_to_async(check_permissions)(permissions, user, self.hub, None):
            if not getattr(user, "is_authenticated", False):
                raise Refusal(401, "Unauthorized.")
            raise Refusal(403, "Forbidden.")
        return credentials

    async def _connection_id(self, scope: dict[str, Any], settings: HubSettings, credentials: Credentials) -> Target:
        """Which connection the socket is for (see :class:`Target`); raises :class:`Refusal`.

        A fresh id if the client skipped negotiate; the id the token names, claimed once; or, for a
        stateful-reconnect client coming back with its token (however old), its connection here
        or on another process (bridged, see :mod:`.socket_bridge`).
        """
        token = query_param(scope, "id")
        if token is None:
            return Target(new_connection_id(), False)  # skipNegotiation: the socket is the connection
        hub_key = self.hub.hub_key()
        manager = get_manager(hub_key)
        if settings.stateful_reconnects_for(hub_key):
            returning = resolve_token(hub_key, credentials.user, token, None)
            if returning is not None and returning.stateful:
                existing = manager.connections.get(returning.connection_id) if manager is not None else None
                if isinstance(existing, HubConnection) and existing.resumable:
                    return Target(returning.connection_id, True, local=existing)
                if existing is not None:
                    raise Refusal(409, "Connection ID already in use")
                if resolve_token(hub_key, credentials.user, token, settings.negotiate_token_max_age) is not None:
                    try:
                        if await claim_everywhere(token, settings.negotiate_token_max_age):
                            return Target(returning.connection_id, True)  # its first socket
                    except ClaimUnavailableError as exc:
                        raise Refusal(503, str(exc)) from exc
                # Used before (or too old to be new) and not here: its owner may be another process.
                return Target(returning.connection_id, True, remote=True)
        resolved = resolve_token(hub_key, credentials.user, token, settings.negotiate_token_max_age)
        if resolved is None:
            raise Refusal(404, "No Connection with that ID")
        if manager is not None and resolved.connection_id in manager.connections:
            raise Refusal(409, "Connection ID already in use")
        try:
            claimed = await claim_everywhere(token, settings.negotiate_token_max_age)
        except ClaimUnavailableError as exc:
            raise Refusal(503, str(exc)) from exc
        if not claimed:
            raise Refusal(404, "No Connection with that ID")
        return Target(resolved.connection_id, resolved.stateful)

    async def user_identifier(
        self, scope: dict[str, Any], settings: HubSettings, credentials: Credentials
    ) -> str | None:
        """The user identifier from ``USER_ID_PROVIDER`` (the ``IUserIdProvider`` analogue)."""
        user_identifier: Any
        try:
            user_identifier = settings.user_id_provider(credentials.user, scope)
            if inspect.isawaitable(user_identifier):
                user_identifier = await user_identifier
        except Exception as exc:
            logger.exception("signalr_groups: USER_ID_PROVIDER raised; refusing the connection")
            raise Refusal(500, "The server could not identify the user.") from exc
        if user_identifier is None:
            return None
        return user_identifier if isinstance(user_identifier, str) else str(user_identifier)
