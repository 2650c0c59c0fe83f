"""A connection's message loop: read frames, hand their records to the dispatcher, apply backpressure.

Part of :class:`~.connection.HubConnection`, split out by concern: these functions read and set
the connection's state as its own methods would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from signalr_groups.exceptions import ConnectionClosedError, ProtocolError
from signalr_groups.protocol.hub_protocols import MessageReader
from signalr_groups.server.state import ConnectionState

if TYPE_CHECKING:
    from signalr_groups.server.connection import ASGIReceive, HubConnection

_CLOSING = ConnectionState.CLOSING


async def read_messages(
    connection: HubConnection,
    receive: ASGIReceive,
    reader: MessageReader,
    pending: list[Any],
    error: ProtocolError | None,
) -> None:
    """Read frames until the client leaves or we close.

    ``receive()`` is awaited directly, in this task: no task or future per frame, none parked
    per idle connection. A close we start (``_begin_close``) cancels that await.
    """
    if connection.state.accepting:
        await process(connection, pending, error)
    del pending  # (nothing of a past frame is kept while the loop waits: fewer live objects per idle connection)
    while connection.state.accepting and not connection._socket_lost:
        task = asyncio.current_task()
        connection._receiving = task
        connection.flow.before_receive()
        try:
            message = await receive()
        except asyncio.CancelledError:
            # Our own wake-up (we are closing) ends the loop; a cancel from the server as well
            # (its count stays above zero after ours is taken back) propagates.
            if connection._receive_cancelled and task is not None and task.uncancel() == 0:
                break
            raise
        finally:
            connection._receiving = None
        if message["type"] == "websocket.disconnect":
            code = message.get("code", 1005)
            connection._client_gone = True
            if connection.session is not None and code not in (1000, 1001) and connection.state.accepting:
                connection._socket_lost = True  # stateful reconnect: the client may come back
                break
            connection.state = _CLOSING
            connection.close_reason = "client_closed" if code in (1000, 1001) else "client_gone"
            if code not in (1000, 1001):
                connection._close_exception = ConnectionClosedError(f"The client went away (close code {code}).")
            break
        connection.flow.after_receive()
        connection.last_receive = time.monotonic()
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        records, error = reader.feed(data)
        del message, data
        await process(connection, records, error)
        del records
        full = connection.dispatcher.full_upload()
        while full is not None and connection.state.accepting:
            # Backpressure: an upload stream's buffer is full; stop reading until the hub method reads on
            # (or its call ends). Like a running invocation, this pauses the client timeout.
            connection.flow.pause_reading("streams")
            connection._waiting_on_streams = True
            try:
                await wait_or_stop(connection, full.room())
            finally:
                connection._waiting_on_streams = False
                connection.flow.resume_reading("streams")
            connection.last_receive = time.monotonic()
            full = connection.dispatcher.full_upload()
        worker = connection.dispatcher.worker
        if worker is not None and connection.dispatcher.pending >= connection.settings.max_pending_invocations:
            # Backpressure: stop reading the socket until the queued invocations have run.
            connection.flow.pause_reading()
            try:
                await wait_or_stop(connection, worker)
            finally:
                connection.flow.resume_reading()
            connection.last_receive = time.monotonic()


async def wait_or_stop(connection: HubConnection, awaitable: Awaitable[Any]) -> None:
    """Wait for ``awaitable``, or until the connection is closing (the awaitable is then left to run)."""
    if not connection.state.accepting:
        return
    waiting = asyncio.ensure_future(awaitable)
    stop = connection._stop_waiter = asyncio.get_running_loop().create_future()
    try:
        await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        connection._stop_waiter = None
        stop.cancel()
        if waiting is not awaitable:
            waiting.cancel()  # (a coroutine we wrapped; a task passed in keeps running)


async def process(connection: HubConnection, records: list[Any], error: ProtocolError | None) -> None:
    """Dispatch complete records; after a protocol error, answer the invocations queued before it, then close.

    Like ASP.NET Core (one invocation at a time, run inline), records that came before the bad
    one are still answered; the Close message follows their completions.
    """
    failure = connection.dispatcher.dispatch_records(records)
    if failure is None:
        failure = error
    if failure is None or not connection.state.accepting:
        return
    worker = connection.dispatcher.worker
    if worker is not None:
        await wait_or_stop(connection, worker)
    connection.close_for(failure)
