"""The HTTP endpoint of a hub: Server-Sent Events and long polling (``GET``/``POST``/``DELETE <hub>?id=<token>``).

Status codes and texts follow ASP.NET Core's ``HttpConnectionDispatcher``: 400 ``Connection ID
required``, 404 ``No Connection with that ID``, 400 ``Cannot change transports mid-connection``,
409 for a second event stream, 204 for a poll that a newer one replaced or that found the
connection ended, 202 for a DELETE.

**No sticky sessions.** The first ``GET`` claims the negotiate token (once, cluster-wide) and
its process owns the connection. A later request may reach any process: if the connection is
not here, the request is relayed to its owner over the channel layer — one message to the hub's
processes, answered by the owner (see :class:`~.http_transports.HttpConnections`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Any, Final, TypeVar

from signalr_groups.auth.connection_tokens import resolve
from signalr_groups.auth.credentials import Credentials, InvalidAccessTokenError, credentials_from_scope
from signalr_groups.auth.origin import origin_allowed
from signalr_groups.backplane.claims import ClaimUnavailableError, claim_everywhere
from signalr_groups.backplane.messages import HTTP_DELETE, HTTP_POLL, HTTP_POLL_CANCEL, HTTP_PROBE, HTTP_SEND
from signalr_groups.backplane.rpc import Reply
from signalr_groups.conf import HubSettings, get_hub_settings
from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime.managers import get_manager
from signalr_groups.server import shutdown
from signalr_groups.server.connection import ASGIReceive, ASGISend, HubConnection
from signalr_groups.server.endpoint import HubConsumer, Refusal, query_param
from signalr_groups.server.flow import FlowControl, http_flow_control_for
from signalr_groups.server.http_connections import HttpConnection, HttpConnections, post_body_limit, read_body
from signalr_groups.server.http_relay import Relay, RelayUnavailableError
from signalr_groups.server.http_requests import (
    credential_fingerprint,
    respond,
    unless_client_leaves,
    until_disconnect,
    wants_event_stream,
    while_client_stays,
)
from signalr_groups.server.http_transports import (
    NO_CACHE_HEADERS,
    Inbound,
    LongPollingQueue,
    ServerSentEventsStream,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: A connection's token is good for its whole life once claimed (the negotiate age limit applies to the claim).
TOKEN_LIFETIME: Final = 10 * 365 * 24 * 3600.0
#: Seconds a relaying process waits for the owner to take an acknowledged POST (it may wait for room).
RELAYED_SEND_TIMEOUT: Final = 60.0
#: POSTs of one connection that may wait while one is read (more get 409).
MAX_WAITING_POSTS: Final = 4
#: Seconds beyond the poll timeout a relaying process waits for the owner's answer to a poll.
RELAYED_POLL_MARGIN: Final = 5.0

NOT_FOUND: Final = b"No Connection with that ID"


class HubHttpEndpoint:
    """ASGI app serving one hub's HTTP transports; route it at the hub's path for ``http`` (see ``HubHttpRouter``)."""

    def __init__(self, hub: type[Hub]) -> None:
        self.hub = hub
        self._admission = HubConsumer(hub)
        self._relay = Relay(hub.hub_key())
        #: Relayed POSTs in flight from this process, by connection (bounded: see _post).
        self._relaying: dict[str, int] = {}

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        """Serve one request of an SSE or long-polling connection."""
        if scope["type"] != "http":
            raise ValueError(f"{type(self).__name__} serves HTTP requests only, not {scope['type']!r}.")
        shutdown.install()
        method = scope.get("method", "GET")
        if method not in ("GET", "POST", "DELETE"):
            await respond(send, 405, b"", headers=[(b"allow", b"GET, POST, DELETE")])
            return
        try:
            await self._serve(method, scope, receive, send)
        except Refusal as refusal:
            logger.info(
                "signalr_groups: refused %s %s: %s %s", method, scope.get("path"), refusal.status, refusal.reason
            )
            await respond(send, refusal.status, refusal.reason.encode())

    async def serve_established(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> bool:
        """Serve a request of a connection this process owns without the session and auth middleware.

        A poll or POST of an established connection that presents the very credentials (bearer
        token, or session cookie) its first request presented needs no database lookup: the user is
        the one the connection already has, and a logout, a password change or an expiry closes the
        connection itself. Returns False (serve it the full way) for anything else.
        """
        method = scope.get("method")
        if scope["type"] != "http" or method not in ("GET", "POST", "DELETE"):
            return False
        token = query_param(scope, "id")
        manager = get_manager(self.hub.hub_key()) if token else None
        table = manager.extension(HttpConnections) if manager is not None else None
        entry = table.by_token(token) if table is not None and token else None
        if entry is None or table is None:
            return False
        if method == "GET" and (entry.transport != "LongPolling" or wants_event_stream(scope)):
            return False  # (a second event stream, or a change of transport: answered the full way)
        if not hmac.compare_digest(entry.fingerprint, credential_fingerprint(scope)) or not origin_allowed(scope):
            return False
        if method == "POST":
            await self._post(scope, receive, send, table, entry, entry.connection_id)
        elif method == "DELETE":
            status, body = table.delete(entry)
            await respond(send, status, body)
        else:
            await self._poll_local(receive, send, table, entry)
        return True

    async def _serve(self, method: str, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if not origin_allowed(scope):
            raise Refusal(403, "Origin not allowed.")
        token = query_param(scope, "id")
        if not token:
            raise Refusal(400, "Connection ID required")
        try:
            credentials = await credentials_from_scope(scope)
        except InvalidAccessTokenError as exc:
            raise Refusal(401, str(exc)) from exc
        hub_key = self.hub.hub_key()
        settings = get_hub_settings()
        # The token is bound to the user who negotiated: another user's request cannot use it.
        connection_id = resolve(hub_key, credentials.user, token, TOKEN_LIFETIME)
        if connection_id is None:
            raise Refusal(404, NOT_FOUND.decode())
        manager = get_manager(hub_key, create=True)
        assert manager is not None  # create=True
        table = manager.extension(HttpConnections)
        if table is None:  # pragma: no cover - registered in AppConfig.ready()
            raise Refusal(500, "The HTTP transports are not installed.")
        local = table.get(connection_id)
        fresh = resolve(hub_key, credentials.user, token, settings.negotiate_token_max_age) is not None
        if method == "POST":
            if local is None and fresh and "LongPolling" in settings.transports_for(hub_key):
                # Data before the first poll (signalrcore's long polling sends its handshake first):
                # as ASP.NET Core, whose connection exists from negotiate on, it starts the connection
                # (if no other request claimed the token: then it is relayed to that one's process).
                local = await self._claim(scope, token, "LongPolling", connection_id, credentials, settings, table)
            await self._post(scope, receive, send, table, local, connection_id)
        elif method == "DELETE":
            if local is not None:
                status, body = table.delete(local)
            else:
                status, body = await self._relay_simple(HTTP_DELETE, connection_id, {})
            await respond(send, status, body)
        else:
            transport = "ServerSentEvents" if wants_event_stream(scope) else "LongPolling"
            if local is not None:
                if local.transport != transport:
                    raise Refusal(400, "Cannot change transports mid-connection")
                if transport == "ServerSentEvents":
                    await respond(send, 409)
                    return
                await self._poll_local(receive, send, table, local)
                return
            if fresh:
                # This request may start the connection, if nobody claimed the token yet.
                entry = await self._claim(scope, token, transport, connection_id, credentials, settings, table)
                if entry is not None:
                    if transport == "ServerSentEvents":
                        await self._run_event_stream(scope, receive, send, entry, credentials, table)
                    else:
                        # The first poll returns at once (the client then sends its handshake).
                        await respond(send, 200, content_type=b"application/octet-stream", headers=NO_CACHE_HEADERS)
                    return
            await self._get_remote(receive, send, transport, connection_id)

    # ------------------------------------------------------------------ starting a connection

    async def _claim(
        self,
        scope: dict[str, Any],
        token: str,
        transport: str,
        connection_id: str,
        credentials: Credentials,
        settings: HubSettings,
        table: HttpConnections,
    ) -> HttpConnection | None:
        """Claim a fresh token for a new connection owned here; None if another request claimed it first.

        A long-polling connection starts running at once; an event stream runs in its GET.
        """
        hub_key = self.hub.hub_key()
        if shutdown.draining():
            raise Refusal(503, "The server is shutting down; connect again.")
        if transport not in settings.transports_for(hub_key):
            raise Refusal(404, f"{transport} transport not supported by this end point type")
        try:
            claimed = await claim_everywhere(token, settings.negotiate_token_max_age)
        except ClaimUnavailableError as exc:
            raise Refusal(503, str(exc)) from exc
        if not claimed:
            return None  # another request claimed it (this one is relayed to its process)
        # (Checked once claimed: a request that loses the claim costs no database lookup. The token
        # is bound to this user, so a refusal here only spends a token nobody else could use.)
        await self._admission.authenticate(scope)  # the Origin, the token and the hub's permissions
        user_identifier = await self._admission.user_identifier(scope, settings, credentials)
        try:
            # The handshake may come through another process: listen on the layer from now on.
            # (Only now: a process that loses the claim does not start and stop its manager.)
            await table.manager.hold()
        except Exception as exc:
            logger.warning("signalr_groups: cannot start an HTTP connection: %r", exc)
            raise Refusal(503, "The server cannot reach its channel layer; retry.") from exc
        entry = HttpConnection(connection_id, transport, Inbound())
        entry.user_identifier = user_identifier
        entry.token = token
        entry.fingerprint = credential_fingerprint(scope)
        table.add(entry)  # (the table releases the hold when it forgets the connection)
        if transport == "LongPolling":
            self._start_polling(scope, entry, credentials, settings, table)
        return entry

    async def _run_event_stream(
        self,
        scope: dict[str, Any],
        receive: ASGIReceive,
        send: ASGISend,
        entry: HttpConnection,
        credentials: Credentials,
        table: HttpConnections,
    ) -> None:
        """Serve an event stream's connection for as long as its GET lasts."""
        user_identifier, transport, connection_id = entry.user_identifier, entry.transport, entry.connection_id
        stream = ServerSentEventsStream(send)
        watcher: asyncio.Task[None] | None = None
        try:
            connection = self._connection(
                scope, stream, transport, connection_id, credentials, user_identifier, http_flow_control_for(send)
            )
            watcher = asyncio.ensure_future(until_disconnect(receive))
            watcher.add_done_callback(lambda _task: entry.inbound.disconnect())
            await stream.start()
            await connection.run(entry.inbound.receive)
        finally:
            if watcher is not None:
                watcher.cancel()
            table.ended(entry)
            with contextlib.suppress(Exception):
                await stream.end()

    def _start_polling(
        self,
        scope: dict[str, Any],
        entry: HttpConnection,
        credentials: Credentials,
        settings: HubSettings,
        table: HttpConnections,
    ) -> None:
        """Run a long-polling connection in the background (polls and POSTs reach it through the table)."""
        user_identifier, transport, connection_id = entry.user_identifier, entry.transport, entry.connection_id
        polling = entry.polling = LongPollingQueue(max(64 * 1024, settings.outbox_max_bytes // 2))

        async def run() -> None:
            try:
                connection = self._connection(
                    scope, polling, transport, connection_id, credentials, user_identifier, FlowControl()
                )
                connection.outbox.set_writable(polling.writable)
                await connection.run(entry.inbound.receive)
            finally:
                table.ended(entry)

        table.manager.spawn(run())

    def _connection(
        self,
        scope: dict[str, Any],
        send: ASGISend,
        transport: str,
        connection_id: str,
        credentials: Credentials,
        user_identifier: str | None,
        flow: FlowControl,
    ) -> HubConnection:
        manager = get_manager(self.hub.hub_key(), create=True)
        assert manager is not None
        return HubConnection(
            flow=flow,
            hub=self.hub,
            scope=scope,
            send=send,
            settings=get_hub_settings(),
            connection_id=connection_id,
            credentials=credentials,
            user_identifier=user_identifier,
            manager=manager,
            transport=transport,
        )

    # ------------------------------------------------------------------ requests for a live connection

    async def _post(
        self,
        scope: dict[str, Any],
        receive: ASGIReceive,
        send: ASGISend,
        table: HttpConnections,
        local: HttpConnection | None,
        connection_id: str,
    ) -> None:
        """Queue a POST's data for the connection, here or (relayed) on its owner.

        One POST per connection is read at a time (ASP.NET Core queues them behind a lock, as the
        official clients send one at a time); a few more may wait for it, unread, and more get 409.
        So a connection holds at most its inbound queue plus one body, however many POSTs it sends.
        """
        if local is not None:
            if local.posts_waiting >= MAX_WAITING_POSTS:
                await respond(send, 409, b"Too many concurrent POSTs on this connection.")
                return
            local.posts_waiting += 1
            try:
                async with local.post_lock:
                    body = await read_body(receive, post_body_limit())
                    if body is None:
                        await respond(send, 413, b"The request body is too large.")
                        return
                    status = await table.send(local, body)
            finally:
                local.posts_waiting -= 1
            await respond(send, status, NOT_FOUND if status == 404 else b"")
            return
        if self._relaying.get(connection_id, 0) >= MAX_WAITING_POSTS:
            await respond(send, 409, b"Too many concurrent POSTs on this connection.")
            return
        self._relaying[connection_id] = self._relaying.get(connection_id, 0) + 1
        try:
            body = await read_body(receive, post_body_limit())
            if body is None:
                await respond(send, 413, b"The request body is too large.")
                return
            reply = await self._relayed(HTTP_SEND, connection_id, {"data": body}, RELAYED_SEND_TIMEOUT)
        finally:
            count = self._relaying.pop(connection_id) - 1
            if count:
                self._relaying[connection_id] = count
        status = 404 if reply is None else int(reply.body.get("status", 500))
        await respond(send, status, NOT_FOUND if status == 404 else b"")

    async def _poll_local(
        self, receive: ASGIReceive, send: ASGISend, table: HttpConnections, local: HttpConnection
    ) -> None:
        poll = await unless_client_leaves(receive, table.poll(local))
        if poll is not None:  # (a client that went away had nothing taken from the queue)
            status, data = poll
            await self._answer_poll(send, status, data)

    @staticmethod
    async def _answer_poll(send: ASGISend, status: int, data: bytes) -> None:
        if status == 200:
            await respond(send, 200, data, content_type=b"application/octet-stream", headers=NO_CACHE_HEADERS)
        elif status == 404:
            await respond(send, 404, NOT_FOUND)
        else:
            await respond(send, status, data, headers=NO_CACHE_HEADERS)

    async def _get_remote(self, receive: ASGIReceive, send: ASGISend, transport: str, connection_id: str) -> None:
        """A GET for a connection this process does not own: relay the poll, or refuse a second stream."""
        if transport == "ServerSentEvents":
            reply = await self._relayed(HTTP_PROBE, connection_id, {}, get_hub_settings().group_action_timeout)
            if reply is None:
                raise Refusal(404, NOT_FOUND.decode())
            if reply.body.get("transport") != transport:
                raise Refusal(400, "Cannot change transports mid-connection")
            await respond(send, 409)
            return
        poll_id_holder: dict[str, str] = {}
        timeout = get_hub_settings().long_polling_poll_timeout + RELAYED_POLL_MARGIN
        done, reply = await while_client_stays(
            receive, self._relayed(HTTP_POLL, connection_id, {}, timeout, poll_id_holder)
        )
        if not done:
            poll_id = poll_id_holder.get("request_id")
            if poll_id is not None:  # tell the owner: the poll's data stays queued for the next one
                await self._relay.tell(HTTP_POLL_CANCEL, connection_id, {"poll_id": poll_id})
            return
        if reply is None:
            await respond(send, 404, NOT_FOUND)
            return
        await self._answer_poll(send, int(reply.body.get("status", 500)), bytes(reply.body.get("data") or b""))

    # ------------------------------------------------------------------ relaying

    async def _relay_simple(self, kind: str, connection_id: str, fields: dict[str, Any]) -> tuple[int, bytes]:
        reply = await self._relayed(kind, connection_id, fields, get_hub_settings().group_action_timeout)
        if reply is None:
            return 404, NOT_FOUND
        return int(reply.body.get("status", 500)), bytes(reply.body.get("data") or b"")

    async def _relayed(
        self,
        kind: str,
        connection_id: str,
        fields: dict[str, Any],
        timeout: float,
        request_id_out: dict[str, str] | None = None,
    ) -> Reply | None:
        """Relay a request to the connection's owner (see :mod:`.http_relay`); a failing layer is a 503."""
        try:
            return await self._relay.ask(
                kind,
                connection_id,
                fields,
                timeout,
                acknowledged=kind in (HTTP_SEND, HTTP_POLL),
                request_id_out=request_id_out,
            )
        except RelayUnavailableError as exc:
            raise Refusal(503, "The server cannot reach the process that holds the connection; retry.") from exc
