"""Streams of one connection: client upload streams, and the streaming calls that run beside the queue.

- :class:`UploadStream`: what a client sends on one of its ``streamIds``, as the async iterator a
  hub method's ``AsyncIterator[T]`` parameter receives; buffered up to ``STREAM_BUFFER_CAPACITY``
  items, beyond which the connection stops reading (backpressure, as ASP.NET Core's bounded channel);
- :class:`StreamingCalls`: the calls that stream — a StreamInvocation of an ``async def`` that
  yields (its items go out as StreamItems, then a Completion), or an invocation with upload
  streams. As in ASP.NET Core they do not wait in the one-at-a-time invocation queue; at most
  ``MAX_STREAMS_PER_CONNECTION`` run at once. A CancelInvocation (or the connection ending) stops
  the generator, whose ``finally`` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final

from signalr_groups.server.gate import Gate

logger = logging.getLogger(__name__)

#: An upload stream may hold this many times its capacity within one frame before it is a protocol error.
OVERFLOW_FACTOR: Final = 10
#: Upload ids remembered after their call ended, to drop what the client still sends on them.
MAX_DISCARDED: Final = 1000


class ClientStreamError(Exception):
    """The client ended an upload stream with an error (raised to the hub method iterating it)."""


class UploadStream:
    """The items a client sends on one stream id, read by a hub method as an async iterator."""

    __slots__ = ("_arrived", "_done", "_error", "_items", "_room", "capacity", "stream_id")

    def __init__(self, stream_id: str, capacity: int) -> None:
        self.stream_id = stream_id
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._done = False
        self._error: str | None = None
        self._arrived = Gate()
        self._room = Gate()

    @property
    def full(self) -> bool:
        """Whether the buffer holds ``capacity`` items (the connection should stop reading)."""
        return len(self._items) >= self.capacity

    @property
    def overflowing(self) -> bool:
        """Whether one frame pushed far more items than the capacity (a protocol error)."""
        return len(self._items) > self.capacity * OVERFLOW_FACTOR

    def push(self, item: Any) -> None:
        """One item from the client."""
        if not self._done:
            self._items.append(item)
            self._arrived.open()

    def complete(self, error: str | None = None) -> None:
        """The client ended the stream (with ``error``, if it failed)."""
        if not self._done:
            self._done, self._error = True, error
            self._arrived.open()

    @property
    def done(self) -> bool:
        """Whether the stream ended (by the client, or abandoned)."""
        return self._done

    def abandon(self) -> None:
        """Nobody will read the stream any more (its call ended): drop the buffer and release a waiting reader of the socket."""
        self._items.clear()
        self.complete("The call ended.")
        self._room.open()

    async def room(self) -> None:
        """Wait until the hub method has read the buffer below its capacity (or the stream was abandoned)."""
        while self.full:
            await self._room.wait()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        while not self._items:
            if self._done:
                if self._error is not None:
                    raise ClientStreamError(self._error)
                raise StopAsyncIteration
            await self._arrived.wait()
        item = self._items.popleft()
        if len(self._items) < self.capacity:
            self._room.open()
        return item


class StreamingCalls:
    """A connection's upload streams by id, and its running streaming calls by invocation id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.uploads: dict[str, UploadStream] = {}
        #: Upload ids whose call ended before the client ended them: their items are dropped until it does
        #: (the most recent :data:`MAX_DISCARDED` only).
        self.discarded: OrderedDict[str, None] = OrderedDict()
        self._calls: dict[str, asyncio.Task[None]] = {}
        self._cancelled: set[str] = set()
        self._anonymous = 0

    def __len__(self) -> int:
        return len(self._calls)

    def open_uploads(self, stream_ids: list[str]) -> list[UploadStream]:
        """Make the upload streams of a call (before its method is checked: items may follow at once)."""
        streams = [UploadStream(stream_id, self.capacity) for stream_id in stream_ids]
        for stream in streams:
            self.uploads[stream.stream_id] = stream
        return streams

    def close_uploads(self, streams: list[UploadStream], *, discard: bool) -> None:
        """Forget a call's upload streams; with ``discard``, drop what the client still sends on them."""
        for stream in streams:
            if self.uploads.get(stream.stream_id) is stream:
                del self.uploads[stream.stream_id]
                if discard and not stream.done:
                    self.discarded[stream.stream_id] = None
                    while len(self.discarded) > MAX_DISCARDED:
                        self.discarded.popitem(last=False)
            stream.abandon()

    def item(self, stream_id: str, item: Any) -> bool:
        """Route an upload item; False if no stream of that id is open (or being dropped)."""
        stream = self.uploads.get(stream_id)
        if stream is not None:
            stream.push(item)
            return True
        return stream_id in self.discarded

    def end(self, stream_id: str, error: str | None) -> bool:
        """Route the end of an upload; False if no stream of that id is open (or being dropped)."""
        stream = self.uploads.get(stream_id)
        if stream is not None:
            stream.complete(error)
            return True
        if stream_id in self.discarded:
            del self.discarded[stream_id]
            return True
        return False

    def full_upload(self) -> UploadStream | None:
        """An upload whose buffer is full (the connection should wait for it before reading on)."""
        for stream in self.uploads.values():
            if stream.full and not stream.done:
                return stream
        return None

    def start(self, invocation_id: str | None, call: Coroutine[Any, Any, None]) -> None:
        """Run a streaming call in its own task."""
        if invocation_id is None:
            self._anonymous += 1
            key = f"\x00{self._anonymous}"  # a call without an id cannot be cancelled by the client
        else:
            key = invocation_id
        task = asyncio.ensure_future(call)
        self._calls[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))

    def _finished(self, key: str, task: asyncio.Task[None]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
            self._cancelled.discard(key)

    def cancel(self, invocation_id: str) -> None:
        """The client no longer wants this stream (a CancelInvocation); an unknown id is ignored."""
        task = self._calls.get(invocation_id)
        if task is not None and not task.done():
            self._cancelled.add(invocation_id)
            task.cancel()

    def cancelled_by_client(self, invocation_id: str | None) -> bool:
        """Whether the client cancelled this call (its task's CancelledError is then not the connection's end)."""
        return invocation_id is not None and invocation_id in self._cancelled

    async def stop(self) -> None:
        """Cancel every streaming call (the connection is going away) and wait for them to finish."""
        tasks = list(self._calls.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for stream in list(self.uploads.values()):
            stream.abandon()


async def pump_stream(
    items: AsyncIterator[Any],
    write: Callable[[Any], None],
    room: Callable[[], Awaitable[None]],
) -> None:
    """Send each item of a server stream (``write``), waiting for the outbox's ``room`` between items;
    close the generator however it ends (its ``finally`` runs)."""
    try:
        async for item in items:
            write(item)
            await room()
    finally:
        closer = getattr(items, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
