"""A connection's outgoing records: a bounded queue, drained by one writer task in batched frames."""

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

#: Records are batched into one frame up to about this many characters.
BATCH_CHARS: Final = 64 * 1024


class Outbox:
    """Serialized records waiting for the socket, and the writer that sends them.

    :meth:`put` never waits: it appends, reports *pressure* past a quarter of ``max_bytes`` (so
    busy senders yield and the writer runs) and *overflow* past ``max_bytes`` (a client that
    stopped reading). The writer (:meth:`run`) joins queued records into frames of up to
    :data:`BATCH_CHARS`, each written once the socket has room (``writable``, see :mod:`.flow`). :meth:`close` queues a last record and the end marker: the writer sends
    both, then a WebSocket close.
    """

    __slots__ = (
        "_chars",
        "binary",
        "_max_bytes",
        "_on_broken",
        "_on_overflow",
        "_on_pressure",
        "_queue",
        "_send",
        "_before_close",
        "_room",
        "_waiter",
        "_writable",
        "close_queued",
        "connection_id",
        "last_write",
    )

    def __init__(
        self,
        send: ASGISend,
        *,
        connection_id: str,
        max_bytes: int,
        on_pressure: Callable[[], None],
        on_overflow: Callable[[], None],
        on_broken: Callable[[], None],
        writable: Callable[[], Awaitable[None]] | None = None,
        before_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._send = send
        self._writable = writable
        self._before_close = before_close
        self.connection_id = connection_id
        self._max_bytes = max_bytes
        self._on_pressure = on_pressure
        self._on_overflow = on_overflow
        self._on_broken = on_broken
        self._queue: deque[str | bytes | None] = deque()
        #: Whether records are bytes sent in binary frames (MessagePack) rather than text.
        self.binary = False
        self._chars = 0
        # A plain future made on demand rather than an asyncio.Event (which carries a deque): an
        # idle connection should cost as little memory as possible.
        self._waiter: asyncio.Future[None] | None = None
        self._room = Gate()
        #: Whether the end marker is queued (the writer will close the socket).
        self.close_queued = False
        #: Monotonic time of the last frame written (the keep-alive is due when it gets old).
        self.last_write = time.monotonic()

    def set_writable(self, writable: Callable[[], Awaitable[None]]) -> None:
        """Wait for ``writable()`` before each frame (a transport that buffers frames until the client takes them)."""
        self._writable = writable

    async def room(self) -> None:
        """Wait until the queue is back under a quarter of its bound (a server stream's producer waits here)."""
        while self._chars > self._max_bytes >> 2 and not self.close_queued:
            await self._room.wait()

    def _wake_room(self) -> None:
        if self._chars <= self._max_bytes >> 2 or self.close_queued:
            self._room.open()

    @property
    def empty(self) -> bool:
        """Nothing waits to be written."""
        return not self._queue

    def put(self, record: str | bytes) -> None:
        """Queue one serialized record; report pressure or overflow; wake the writer."""
        self._queue.append(record)
        self._chars += len(record)
        if self._chars > self._max_bytes >> 2:
            self._on_pressure()
        if self._chars > self._max_bytes:
            logger.warning(
                "signalr_groups: connection %s is not reading; its outbox passed %d bytes, closing it",
                self.connection_id,
                self._max_bytes,
            )
            self._on_overflow()
            return
        self.wake()

    def close(self, last_record: str | bytes | None, *, discard_pending: bool = False) -> None:
        """Queue ``last_record`` (a Close message, or nothing) and the end marker; drop the backlog if asked."""
        if discard_pending:
            self._queue.clear()
            self._chars = 0
        if last_record is not None:
            self._queue.append(last_record)
        self._queue.append(None)
        self.close_queued = True
        self.wake()
        self._wake_room()

    def wake(self) -> None:
        """Wake the writer if it waits for records."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """Write queued records until the end marker (then close the socket) or a transport failure."""
        queue = self._queue
        try:
            while True:
                if not queue:
                    waiter = self._waiter = asyncio.get_running_loop().create_future()
                    await waiter
                    continue
                parts: list[Any] = []
                size = 0
                close_after = False
                while queue:
                    item = queue.popleft()
                    if item is None:
                        close_after = True
                        break
                    parts.append(item)
                    size += len(item)
                    if size >= BATCH_CHARS:
                        break
                self._chars = max(0, self._chars - size)
                self._wake_room()
                if parts:
                    if self._writable is not None:
                        await self._writable()  # the server buffers writes without limit: wait for room
                    self.last_write = time.monotonic()
                    if self.binary:
                        await self._send({"type": "websocket.send", "bytes": b"".join(parts)})
                    else:
                        await self._send({"type": "websocket.send", "text": "".join(parts)})
                if close_after:
                    if self._before_close is not None:
                        await self._before_close()  # e.g. let the client close first (see flow.py)
                    await self._send({"type": "websocket.close", "code": 1000})
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport is gone
            logger.debug("signalr_groups: writing to %s failed: %r", self.connection_id, exc)
            self._on_broken()
