"""The HTTP transports' moving parts: Server-Sent Events and long polling, and where their connections live.

A connection on an HTTP transport spans several requests: one stream (SSE) or a series of polls
(long polling) carry server→client data, and POSTs carry client→server data. Its
:class:`~signalr_groups.server.connection.HubConnection` is the same as on WebSockets; it reads
and writes WebSocket-shaped ASGI messages, and the classes here adapt them:

- :class:`Inbound`: the POSTed data, queued (bounded) for the connection's ``receive()``;
- :class:`ServerSentEventsStream`: the connection's ``send()`` as ``data:`` events on the open GET;
- :class:`LongPollingQueue`: the connection's ``send()`` into a buffer that the next poll takes whole.

Where these connections live, and how requests for them are relayed: :mod:`.http_connections`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from signalr_groups.server.gate import Gate

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

#: POST bodies waiting for the connection to read them (more waits: backpressure on the POST).
INBOUND_CAPACITY: Final = 4

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
