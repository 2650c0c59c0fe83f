"""The HTTP transports' moving parts: Server-Sent Events and long polling, and where their connections live.

A connection on an HTTP transport spans several requests: one stream (SSE) or a series of polls
(long polling) carry server→client data, and POSTs carry client→server data. Its
:class:`~signalr_groups.server.connection.HubConnection` is the same as on WebSockets; it reads
and writes WebSocket-shaped ASGI messages, and the classes here adapt them:

- :class:`Inbound`: the POSTed data, queued (bounded) for the connection's ``receive()``;
- :class:`ServerSentEventsStream`: the connection's ``send()`` as ``data:`` events on the open GET;
- :class:`LongPollingQueue`: the connection's ``send()`` into a buffer that the next poll takes whole.

:class:`HttpConnections` (a lifetime-manager extension) holds this process's HTTP-transport
connections, and answers the requests other processes relay to it: with no sticky sessions, a
POST or a poll may reach any process, and the one that owns the connection serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from signalr_groups.backplane.messages import HTTP_DELETE, HTTP_POLL, HTTP_POLL_CANCEL, HTTP_PROBE, HTTP_SEND
from signalr_groups.backplane.rpc import answer
from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.server.gate import Gate

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

#: POST bodies waiting for the connection to read them (more waits: backpressure on the POST).
INBOUND_CAPACITY: Final = 4
#: The WebSocket close code a long-polling connection ends with when its client stopped polling.
POLLING_TIMED_OUT: Final = 1006

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache,no-store"),
    (b"pragma", b"no-cache"),
    (b"content-encoding", b"identity"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events on at once
]
NO_CACHE_HEADERS: Final = [
    (b"cache-control", b"no-cache, no-store"),
    (b"pragma", b"no-cache"),
    (b"expires", b"Thu, 01 Jan 1970 00:00:00 GMT"),
]


class Inbound:
    """Client data from POSTs, read by the connection as ``websocket.receive`` messages.

    At most :data:`INBOUND_CAPACITY` bodies wait; a POST beyond that waits for room (as ASP.NET
    Core's pipe applies backpressure), so a client cannot queue unbounded data.
    """

    __slots__ = ("_arrived", "_items", "_room", "closed")

    def __init__(self) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._arrived = Gate()
        self._room = Gate()
        #: No more data will come (the client left, or the connection ended).
        self.closed = False

    async def put(self, data: bytes) -> bool:
        """Queue one POST body, waiting while the queue is full; False if the connection is gone."""
        while not self.closed and len(self._items) >= INBOUND_CAPACITY:
            await self._room.wait()
        if self.closed:
            return False
        self._items.append({"type": "websocket.receive", "bytes": data})
        self._arrived.open()
        return True

    def disconnect(self, code: int = 1000) -> None:
        """The client is gone (or stopped polling): the connection reads a disconnect after what was queued."""
        if self.closed:
            return
        self.closed = True
        self._items.append({"type": "websocket.disconnect", "code": code})
        self._arrived.open()
        self._room.open()

    async def receive(self) -> dict[str, Any]:
        """The next message, for the connection's message loop."""
        while not self._items:
            await self._arrived.wait()
        item = self._items.popleft()
        self._room.open()
        return item


def format_event(payload: str) -> bytes:
    """One Server-Sent Event: every line of ``payload`` as a ``data:`` line (a trailing CR dropped), then a blank line."""
    lines = payload.split("\n")
    return ("".join(f"data: {line.removesuffix(chr(13))}\r\n" for line in lines) + "\r\n").encode("utf-8")


class ServerSentEventsStream:
    """The ``send()`` of a connection on Server-Sent Events: frames become events on the open GET response."""

    __slots__ = ("_send", "finished")

    def __init__(self, send: ASGISend) -> None:
        self._send = send
        #: Whether the response has ended.
        self.finished = False

    async def start(self) -> None:
        """Send the headers and the ``:`` comment that makes browsers fire ``open`` at once."""
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await self._send({"type": "http.response.body", "body": b":\r\n", "more_body": True})

    async def __call__(self, message: dict[str, Any]) -> None:
        """Write one WebSocket-shaped message: a frame as an event; a close ends the response."""
        if self.finished:
            return
        kind = message["type"]
        if kind == "websocket.send":
            text = message.get("text")
            if text is None:  # SSE carries text only; a binary protocol is refused at the handshake
                text = bytes(message.get("bytes") or b"").decode("utf-8", "replace")
            await self._send({"type": "http.response.body", "body": format_event(text), "more_body": True})
        # A close is not written here: the endpoint ends the response once the connection's run is
        # over and it is marked ended, so a POST that follows gets 404 (as ASP.NET Core ends it after
        # disposing the connection).

    async def end(self) -> None:
        """End the response (once)."""
        if not self.finished:
            self.finished = True
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})


class LongPollingQueue:
    """The ``send()`` of a long-polling connection, and the polls that take what it sent.

    Frames wait here until a poll takes all of them at once (whole records only: a frame is
    always whole records). While more than ``limit`` bytes wait, :meth:`writable` holds the
    connection's writer, so its outbox fills and its bound closes a client that stopped polling.
    """

    __slots__ = (
        "_frames",
        "_limit",
        "_poll",
        "_room",
        "_size",
        "active_polls",
        "closed",
        "last_seen",
    )

    def __init__(self, limit: int) -> None:
        self._frames: list[str | bytes] = []
        self._size = 0
        self._limit = limit
        self._poll: asyncio.Future[str] | None = None
        self._room = Gate()
        #: The connection sent its close: once the frames are taken, polls get 204.
        self.closed = False
        #: Polls being served now (the connection is inactive, and may time out, at zero).
        self.active_polls = 0
        #: Monotonic time a poll last ended (or the connection started).
        self.last_seen = time.monotonic()

    async def __call__(self, message: dict[str, Any]) -> None:
        """Take one WebSocket-shaped message from the connection: a frame to queue, or its close."""
        kind = message["type"]
        if kind == "websocket.send":
            frame = message.get("text")
            if frame is None:
                frame = bytes(message.get("bytes") or b"")
            self._frames.append(frame)
            self._size += len(frame)
            self._wake_poll("data")
        elif kind == "websocket.close":
            self.close()

    def close(self) -> None:
        """No more frames will come: the next poll that finds none gets 204."""
        self.closed = True
        self._wake_poll("closed")
        self._room.open()

    async def writable(self) -> None:
        """Wait while more than the limit waits for a poll."""
        while self._size > self._limit and not self.closed:
            await self._room.wait()

    async def poll(self, timeout: float) -> tuple[int, bytes]:
        """Serve one poll: ``(200, frames)``, ``(200, b"")`` after ``timeout``, or ``(204, b"")``.

        204 when the connection has ended, or when a newer poll replaced this one (as ASP.NET
        Core answers both). Cancelling the call (the client went away) takes nothing.
        """
        previous = self._poll
        if previous is not None and not previous.done():
            previous.set_result("replaced")
        self.active_polls += 1
        try:
            if not self._frames and not self.closed:
                waiter = self._poll = asyncio.get_running_loop().create_future()
                try:
                    reason = await asyncio.wait_for(asyncio.shield(waiter), timeout)
                except TimeoutError:
                    reason = "timeout"
                finally:
                    if self._poll is waiter:
                        self._poll = None
                if reason == "replaced":
                    return 204, b""
            if self._frames:
                return 200, self._take()
            if self.closed:
                return 204, b""
            return 200, b""
        finally:
            self.active_polls -= 1
            self.last_seen = time.monotonic()

    def _take(self) -> bytes:
        frames, self._frames, self._size = self._frames, [], 0
        self._room.open()
        return b"".join(frame.encode("utf-8") if isinstance(frame, str) else frame for frame in frames)

    def _wake_poll(self, reason: str) -> None:
        poll = self._poll
        if poll is not None and not poll.done():
            poll.set_result(reason)


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
