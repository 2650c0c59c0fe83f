"""Stateful reconnect for a connection: hold it when its socket is lost, resume it on the client's next one.

Part of :class:`~.connection.HubConnection`, split out by concern: these functions read and set
the connection's state as its own methods would (see :mod:`.stateful` for the sequence numbers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from signalr_groups.server.flow import FlowControl
from signalr_groups.server.message_loop import read_messages
from signalr_groups.server.stateful import HeldConnections

if TYPE_CHECKING:
    from signalr_groups.server.connection import ASGIReceive, ASGISend, HubConnection

logger = logging.getLogger(__name__)


async def resume(connection: HubConnection, receive: ASGIReceive, send: ASGISend, flow: FlowControl) -> None:
    """Serve the connection on the client's new socket (stateful reconnect; the socket is accepted).

    If the old socket still looks alive (the client saw it die first), it is closed and
    replaced. The writer sends a Sequence message and every record the client did not
    acknowledge before anything new; the client's resent messages are dropped up to its
    Sequence, and duplicates after it.
    """
    if not connection.detached and connection.resumable:
        connection._socket_lost = True
        connection._replacing = True  # its client is back: the old socket's end is no hold
        done = connection._socket_done
        connection._wake_reader()
        if done is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), 5.0)
        connection._replacing = False
    session = connection.session
    if session is None or not connection.detached or not connection.resumable:
        await send({"type": "websocket.close", "code": 1000})
        return
    held = connection.manager.extension(HeldConnections)
    if held is not None:
        held.resume(connection)
    connection.detached = False
    connection._socket_lost = connection._client_gone = connection._receive_cancelled = False
    connection._send = send
    connection._receive = receive
    connection.flow = flow
    connection._socket_done = asyncio.get_running_loop().create_future()
    reader = connection._reader = connection.protocol.reader(connection.settings.max_message_size)
    session.waiting_for_sequence = True
    connection.outbox.direct = flow if flow.direct_writes else None
    connection.outbox.attach(
        send,
        writable=flow.writable if flow.controls_writes else None,
        before_close=connection._linger if flow.lingers else None,
    )
    connection.last_receive = time.monotonic()
    logger.info("signalr_groups: connection %s resumed on a new socket", connection.connection_id)
    try:
        await read_messages(connection, receive, reader, [], None)
    except BaseException:
        connection._socket_lost = False
        raise
    finally:
        await socket_ended(connection)


async def socket_ended(connection: HubConnection) -> None:
    """A socket's message loop is over: hold the connection for its client (stateful reconnect), or end it."""
    try:
        connection.flow.pause_reading("closing")  # the linger reads again, to see the client's close
        if (
            connection._socket_lost
            and connection.session is not None
            and connection._registered
            and connection.state.accepting
        ):
            await hold(connection)
        else:
            await connection._teardown(connection._registered, connection._connected)
    finally:
        done = connection._socket_done
        if done is not None and not done.done():
            done.set_result(None)


async def hold(connection: HubConnection) -> None:
    """Keep the connection (groups, buffers, running calls) while its client reconnects."""
    connection.outbox.detach()
    if not connection._client_gone:
        # Replaced by the client's newer socket, or a write failed: close this one.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection._send({"type": "websocket.close", "code": 1000}), 1.0)
        connection.flow.drop()
    connection.flow.close()
    connection.flow = FlowControl()
    if not connection.state.accepting:
        await connection._teardown(connection._registered, connection._connected)  # closed meanwhile
        return
    connection.detached = True
    logger.info("signalr_groups: connection %s lost its socket; waiting for it to reconnect", connection.connection_id)
    held = connection.manager.extension(HeldConnections)
    if held is not None:
        held.hold(connection, evict=not connection._replacing)
