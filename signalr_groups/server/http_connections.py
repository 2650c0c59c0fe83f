"""Where this process's HTTP-transport connections live, and the answers to requests other processes relay.

:class:`HttpConnections` (a lifetime-manager extension) holds one hub's Server-Sent Events and
long-polling connections of this process. With no sticky sessions a POST, a poll or a DELETE may
reach any process; the one that owns the connection serves it, here (see :mod:`.http_relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from signalr_groups.backplane.messages import HTTP_DELETE, HTTP_POLL, HTTP_POLL_CANCEL, HTTP_PROBE, HTTP_SEND
from signalr_groups.backplane.rpc import answer
from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.server.http_transports import Inbound, LongPollingQueue

logger = logging.getLogger(__name__)

#: The WebSocket close code a long-polling connection ends with when its client stopped polling.
POLLING_TIMED_OUT: Final = 1006


@dataclass(eq=False)
class HttpConnection:
    """One HTTP-transport connection owned by this process."""

    connection_id: str
    transport: str
    inbound: Inbound
    polling: LongPollingQueue | None = None
    #: The user identifier resolved when the connection was claimed.
    user_identifier: str | None = None
    #: The connection token (its requests' ``id``), and a digest of the credentials its first request presented.
    token: str = ""
    fingerprint: str = ""
    #: One POST is read at a time; ``posts_waiting`` counts those waiting (and the one being read).
    post_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    posts_waiting: int = 0
    #: Monotonic time the connection's run ended (None while it runs).
    ended_at: float | None = None
    relayed_polls: dict[str, asyncio.Task[Any]] = field(default_factory=dict)


async def read_body(receive: Callable[[], Awaitable[dict[str, Any]]], limit: int) -> bytes | None:
    """The whole request body, or None if it is longer than ``limit`` bytes (or the client left)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = bytes(message.get("body") or b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body"):
            return b"".join(parts)


def post_body_limit() -> int:
    """The largest POST body accepted: room for a batch of messages at the largest message size."""
    return max(1024 * 1024, 4 * get_hub_settings().max_message_size)


class HttpConnections(ManagerExtension):
    """This process's HTTP-transport connections of one hub, and the answers to relayed requests."""

    def __init__(self, manager: Any) -> None:
        super().__init__(manager)
        self._connections: dict[str, HttpConnection] = {}
        self._tokens: dict[str, HttpConnection] = {}

    def by_token(self, token: str) -> HttpConnection | None:
        """The connection whose requests carry ``id=token``, if this process owns it."""
        return self._tokens.get(token)

    def get(self, connection_id: str) -> HttpConnection | None:
        """The connection, if this process owns it."""
        return self._connections.get(connection_id)

    def add(self, connection: HttpConnection) -> None:
        """A new connection owned here."""
        self._connections[connection.connection_id] = connection
        if connection.token:
            self._tokens[connection.token] = connection

    def discard(self, connection_id: str) -> None:
        """Forget a connection."""
        connection = self._connections.pop(connection_id, None)
        if connection is not None:
            self._tokens.pop(connection.token, None)

    def __len__(self) -> int:
        return len(self._connections)

    # ------------------------------------------------------------------ local operations

    async def send(self, connection: HttpConnection, data: bytes) -> int:
        """Queue POSTed data for the connection: 200, or 404 if it has ended."""
        if connection.ended_at is not None:
            return 404
        return 200 if await connection.inbound.put(data) else 404

    async def poll(self, connection: HttpConnection) -> tuple[int, bytes]:
        """Serve a long poll (see :meth:`LongPollingQueue.poll`); forget the connection once it got its 204."""
        polling = connection.polling
        if polling is None:
            return 400, b"Cannot change transports mid-connection"
        status, data = await polling.poll(get_hub_settings().long_polling_poll_timeout)
        if status == 204 and polling.closed:
            self._forget(connection)
        return status, data

    def delete(self, connection: HttpConnection) -> tuple[int, bytes]:
        """End a long-polling connection at the client's request: 202 (or 400 for another transport)."""
        if connection.polling is None:
            return 400, b"Cannot terminate this connection using the DELETE endpoint."
        connection.inbound.disconnect()
        connection.polling.close()
        return 202, b""

    def _forget(self, connection: HttpConnection) -> None:
        if self._connections.get(connection.connection_id) is connection:
            del self._connections[connection.connection_id]
            self._tokens.pop(connection.token, None)
            self.manager.spawn(self.manager.release())

    def ended(self, connection: HttpConnection) -> None:
        """The connection's run is over: SSE is forgotten now; long polling once its last poll took the rest."""
        connection.ended_at = time.monotonic()
        connection.inbound.disconnect()
        if connection.polling is None:
            self._forget(connection)
        else:
            connection.polling.close()

    # ------------------------------------------------------------------ the sweep

    def on_sweep(self) -> None:
        """Time out long-polling connections whose client stopped polling; forget ended ones after the timeout."""
        now = time.monotonic()
        timeout = get_hub_settings().disconnect_timeout
        for connection in list(self._connections.values()):
            polling = connection.polling
            if polling is None or polling.active_polls:
                continue
            if connection.ended_at is not None:
                if now - connection.ended_at > timeout and now - polling.last_seen > timeout:
                    self._forget(connection)
            elif now - polling.last_seen > timeout:
                logger.info("signalr_groups: long-polling connection %s stopped polling", connection.connection_id)
                connection.inbound.disconnect(POLLING_TIMED_OUT)

    # ------------------------------------------------------------------ relayed requests

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """Requests relayed from other processes, for connections owned here."""
        return {
            HTTP_SEND: self._relayed_send,
            HTTP_POLL: self._relayed_poll,
            HTTP_POLL_CANCEL: self._relayed_poll_cancel,
            HTTP_DELETE: self._relayed_delete,
            HTTP_PROBE: self._relayed_probe,
        }

    def _answer_later(
        self, request: dict[str, Any], work: Callable[[], Awaitable[dict[str, Any]]]
    ) -> asyncio.Task[Any]:
        """Acknowledge at once, run ``work`` in the background (the layer's receive loop must not wait),
        and answer with its result (see :func:`~signalr_groups.backplane.rpc.ask_owner_with_ack`)."""

        async def run() -> None:
            await answer(self.manager.layer, request, self.manager.channel_name, body={"accepted": True})
            body = await work()
            await answer(self.manager.layer, request, self.manager.channel_name, body=body)

        task = asyncio.ensure_future(run())
        self.manager.spawn(self._quietly(task))
        return task

    @staticmethod
    async def _quietly(task: asyncio.Task[Any]) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await task
            except Exception:
                logger.exception("signalr_groups: answering a relayed HTTP-transport request failed")

    async def _relayed_send(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.get(str(message.get("connection_id")))
        if connection is None:
            return None

        async def work() -> dict[str, Any]:
            async with connection.post_lock:  # one POST at a time, relayed or not
                return {"status": await self.send(connection, bytes(message.get("data") or b""))}

        self._answer_later(message, work)
        return None

    async def _relayed_poll(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.get(str(message.get("connection_id")))
        if connection is None:
            return None
        request_id = str(message.get("request_id"))

        async def work() -> dict[str, Any]:
            status, data = await self.poll(connection)
            return {"status": status, "data": data}

        task = self._answer_later(message, work)
        connection.relayed_polls[request_id] = task
        task.add_done_callback(lambda _task: connection.relayed_polls.pop(request_id, None))
        return None

    async def _relayed_poll_cancel(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.get(str(message.get("connection_id")))
        if connection is not None:
            task = connection.relayed_polls.pop(str(message.get("poll_id")), None)
            if task is not None:
                task.cancel()
        return None

    async def _relayed_delete(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.get(str(message.get("connection_id")))
        if connection is None:
            return None
        status, body = self.delete(connection)
        return {"status": status, "data": body}

    async def _relayed_probe(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.get(str(message.get("connection_id")))
        if connection is None:
            return None
        return {"transport": connection.transport}
