"""A connection's outgoing records: a bounded queue, drained by one writer task in batched frames."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from signalr_groups.protocol.serialized import SerializedInvocation
from signalr_groups.server.flow import FlowControl
from signalr_groups.server.gate import Gate
from signalr_groups.server.stateful import StatefulSession
from signalr_groups.server.uvicorn_socket import frame_of, shared_frame_of

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]

#: Records are batched into one frame up to about this many characters.
BATCH_CHARS: Final = 64 * 1024


class _Untracked:
    """A queued record that stateful reconnect does not number or replay (a Close)."""

    __slots__ = ("record",)

    def __init__(self, record: str | bytes) -> None:
        self.record = record

    def __len__(self) -> int:
        return len(self.record)


#: The (always empty) control queue of a connection without stateful reconnect: one deque less per connection.
_NO_CONTROL: Final[deque[str | bytes]] = deque(maxlen=0)


def _nothing() -> None:
    """A callback that no longer has anyone to call (the connection is over)."""


def _no_sequence(sequence_id: int) -> str:
    raise RuntimeError("not a stateful-reconnect connection")


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
        "_control",
        "_resend_due",
        "_writing",
        "ping",
        "sequence_record",
        "session",
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
        "direct",
        "last_write",
    )

    def __init__(
        self,
        send: ASGISend | None,
        *,
        connection_id: str,
        max_bytes: int,
        on_pressure: Callable[[], None],
        on_overflow: Callable[[], None],
        on_broken: Callable[[], None],
        writable: Callable[[], Awaitable[None]] | None = None,
        before_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._send: ASGISend | None = send
        self._writable = writable
        self._before_close = before_close
        self.connection_id = connection_id
        self._max_bytes = max_bytes
        self._on_pressure = on_pressure
        self._on_overflow = on_overflow
        self._on_broken = on_broken
        self._queue: deque[Any] = deque()
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
        #: Stateful reconnect (set after the handshake, see :meth:`resumable`): the session, the
        #: protocol's Ping record (never numbered) and Sequence writer, and Acks waiting to go out.
        self.session: StatefulSession | None = None
        self.ping: str | bytes | None = None
        self.sequence_record: Callable[[int], str | bytes] = _no_sequence
        self._control: deque[str | bytes] = _NO_CONTROL  # a deque of its own once resumable
        self._resend_due = False
        self._writing: ASGISend | None = None
        #: The server's direct frame writer (see :mod:`.uvicorn_socket`), or None: records then always queue.
        self.direct: FlowControl | None = None

    def resumable(
        self, session: StatefulSession, ping: str | bytes, sequence_record: Callable[[int], str | bytes]
    ) -> None:
        """Number and keep what is written (stateful reconnect), before the writer starts."""
        self.session = session
        self._control = deque()
        self.ping = ping
        self.sequence_record = sequence_record

    def detach(self) -> None:
        """The socket is gone: hold everything until :meth:`attach` (stateful reconnect)."""
        self.direct = None
        self._send = None
        self._writable = None
        self._before_close = None

    def attach(
        self,
        send: ASGISend,
        *,
        writable: Callable[[], Awaitable[None]] | None,
        before_close: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Write to a new socket: first the Sequence message and every record not acknowledged, then the rest."""
        self._send = send
        self._writable = writable
        self._before_close = before_close
        self._control.clear()  # Acks of the old socket: the session acknowledges again on the next tick
        if self.session is not None:
            self.session.ack_lost()
        self._resend_due = True
        self.wake()

    def unlink(self) -> None:
        """The connection is over: drop every reference back to it and to its socket (see ``HubConnection``)."""
        self.direct = None
        self._send = self._writing = None
        self._writable = self._before_close = None
        self._on_pressure = self._on_overflow = self._on_broken = _nothing
        self._queue.clear()
        self._waiter = None

    def put_control(self, record: str | bytes) -> None:
        """Queue an Ack: written before queued records, even while the replay buffer is full."""
        self._control.append(record)
        self.wake()

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

    def put(self, record: str | bytes, shared: SerializedInvocation | None = None) -> None:
        """Write one serialized record now if the socket has room and nothing waits before it; else queue it.

        The direct write (``direct``, under uvicorn) skips the writer task and the ASGI send path; a
        record that is a form of ``shared`` (a send to many connections) reuses its frame.
        """
        direct = self.direct
        # Only while the writer idles (it waits for records, not on the socket): nothing can then go before this.
        if (
            direct is not None
            and self._waiter is not None
            and not self._queue
            and self.session is None
            and direct.write_frame(frame_of(record) if shared is None else shared_frame_of(record, shared))
        ):
            self.last_write = time.monotonic()
            return
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
            self._queue.append(last_record if self.session is None else _Untracked(last_record))
        self._queue.append(None)
        self.close_queued = True
        self.wake()
        self._wake_room()
        if self.session is not None:
            self.session.release()

    def wake(self) -> None:
        """Wake the writer if it waits for records."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self) -> None:
        """Write queued records until the end marker (then close the socket) or a transport failure.

        With a :class:`~.stateful.StatefulSession` (stateful reconnect), a transport failure is not
        the end: the writer waits for :meth:`attach` of the client's next socket, writes the
        Sequence message and the records the client did not acknowledge, and goes on.
        """
        queue = self._queue
        while True:
            try:
                if self.session is not None:
                    await self._run_resumable()
                    return
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
                        await self._write(parts)
                    if close_after:
                        await self._close_socket()
                        return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the transport is gone
                logger.debug("signalr_groups: writing to %s failed: %r", self.connection_id, exc)
                if self.session is None:
                    self._on_broken()
                    return
                # Stateful reconnect: wait for the client's next socket (unless it already came:
                # this was the old one failing), then write again what it did not acknowledge.
                if self._send is self._writing:
                    self._send = None
                    self._on_broken()

    async def _write(self, parts: list[Any]) -> None:
        send = self._writing = self._send
        if send is None:
            raise ConnectionError("no socket")
        if self._writable is not None:
            await self._writable()  # the server buffers writes without limit: wait for room
        self.last_write = time.monotonic()
        if self.binary:
            await send({"type": "websocket.send", "bytes": b"".join(parts)})
        else:
            await send({"type": "websocket.send", "text": "".join(parts)})

    async def _close_socket(self) -> None:
        if self._before_close is not None:
            await self._before_close()  # e.g. let the client close first (see flow.py)
        send = self._writing = self._send
        if send is not None:
            await send({"type": "websocket.close", "code": 1000})

    async def _run_resumable(self) -> None:
        """The writer of a connection that may resume on a new socket (see :mod:`.stateful`)."""
        session = self.session
        assert session is not None
        queue = self._queue
        control = self._control
        loop = asyncio.get_running_loop()
        while True:
            if self._send is None:
                if self.close_queued:
                    return  # closing while no socket is attached: nothing to write to
                waiter = self._waiter = loop.create_future()
                await waiter
                continue
            if self._resend_due:
                self._resend_due = False
                first, records = session.resend()
                await self._write([self.sequence_record(first), *records] if records else [self.sequence_record(first)])
                continue
            blocked = session.full and not self.close_queued
            if not control and (not queue or blocked):
                if blocked:
                    await self._wait_either(session.room())
                else:
                    waiter = self._waiter = loop.create_future()
                    await waiter
                continue
            parts: list[Any] = list(control)
            control.clear()
            size = 0
            close_after = False
            while queue and (self.close_queued or not session.full):
                item = queue.popleft()
                if item is None:
                    close_after = True
                    break
                if type(item) is _Untracked:
                    parts.append(item.record)
                elif item is self.ping and item is not None:
                    parts.append(item)
                    size += len(item)
                else:
                    session.track(item)
                    parts.append(item)
                    size += len(item)
                if size >= BATCH_CHARS:
                    break
            self._chars = max(0, self._chars - size)
            self._wake_room()
            if parts:
                await self._write(parts)
            if close_after:
                await self._close_socket()
                return

    async def _wait_either(self, room: Awaitable[None]) -> None:
        """Wait for room in the replay buffer, or for a wake-up (a control record, a close, a new socket)."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        acked = asyncio.ensure_future(room)
        try:
            await asyncio.wait({waiter, acked}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            acked.cancel()
