"""A connection's keep-alive: ping an idle client, close a silent one, end expired credentials.

Part of :class:`~.connection.HubConnection`, split out by concern; the lifetime manager's sweep
calls it about once a second for every connection.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from signalr_groups.exceptions import ConnectionClosedError
from signalr_groups.server.hub_calls import GENERIC_CLOSE_ERROR

if TYPE_CHECKING:
    from signalr_groups.server.connection import HubConnection


def tick(connection: HubConnection, now: float) -> float | None:
    """Ping an idle client, close a silent one; return the monotonic time of the next look (None: next heartbeat).

    Called by the lifetime manager's keep-alive schedule (:mod:`signalr_groups.lifetime.schedule`).
    """
    if not connection.state.accepting:
        return None
    settings = connection.settings
    wall = time.time()
    if connection.detached:
        # No socket: the window of HeldConnections applies, not the client timeout; no pings.
        if connection.credentials.expired(wall):
            connection._begin_close(
                None,
                None,
                ConnectionClosedError("credentials expired while reconnecting"),
                reason="credentials_expired",
            )
        return None
    session = connection.session
    every_heartbeat = session is not None  # stateful reconnect acknowledges about once a second
    if session is not None:
        acknowledged = session.ack_due()
        if acknowledged is not None:
            connection.outbox.put_control(connection.protocol.ack(acknowledged))
    if connection.dispatcher.worker is not None or connection._waiting_on_streams:
        # Dispatching (as ASP.NET Core, the client timeout pauses while a hub method runs).
        connection.last_receive = now
        every_heartbeat = True
    elif connection.client_pinged and now - connection.last_receive > settings.client_timeout:
        connection._begin_close(
            f"{GENERIC_CLOSE_ERROR} The client sent nothing for {settings.client_timeout:g} seconds.",
            True,
            ConnectionClosedError("client timeout"),
            reason="client_timeout",
        )
        return None
    if connection.credentials.expired(wall):
        error, allow_reconnect = connection.credentials.expiry_close()
        reason = "token expired" if connection.credentials.kind == "token" else "session expired"
        connection._begin_close(error, allow_reconnect, ConnectionClosedError(reason), reason="credentials_expired")
        return None
    if connection.keep_alive:
        if not connection.outbox.empty:
            every_heartbeat = True  # a ping waits for the queue to drain
        elif now - connection.outbox.last_write >= settings.keep_alive_interval:
            connection.write(connection.protocol.ping)
    if every_heartbeat:
        return None
    due = connection.outbox.last_write + settings.keep_alive_interval if connection.keep_alive else math.inf
    if connection.client_pinged:
        due = min(due, connection.last_receive + settings.client_timeout)
    expires_at = connection.credentials.expires_at
    if expires_at is not None:
        due = min(due, now + expires_at - wall)
    return due
