"""One client connection: the sequence of its life, its message loop, keep-alive and close.

Like ASP.NET Core's ``HubConnectionHandler`` with ``HubConnectionContext``: read the handshake
(:mod:`.handshake`), register with the lifetime manager, answer the handshake, run
``on_connected``, read frames and hand their records to the :class:`~.dispatcher.HubDispatcher`,
and on the way out run ``on_disconnected`` while still in the groups, then unregister. Outgoing
records go through the :class:`~.outbox.Outbox`; the state is a :class:`~.state.ConnectionState`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from signalr_groups import metrics
from signalr_groups.auth.credentials import Credentials
from signalr_groups.conf import HubSettings
from signalr_groups.exceptions import ClientGoneError, ConnectionClosedError, ProtocolError
from signalr_groups.hubs.caller_context import HubCallerContext
from signalr_groups.hubs.hub import Hub
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.protocol.handshake import HANDSHAKE_OK
from signalr_groups.protocol.hub_protocols import JSON, Frame, HubProtocol, MessageReader
from signalr_groups.protocol.serialized import SerializedInvocation
from signalr_groups.rate_limits import address_key
from signalr_groups.server.dispatcher import HubDispatcher
from signalr_groups.server.flow import FlowControl
from signalr_groups.server.handshake import read_handshake
from signalr_groups.server.hub_calls import GENERIC_CLOSE_ERROR
from signalr_groups.server.keepalive import tick
from signalr_groups.server.message_loop import read_messages
from signalr_groups.server.outbox import Outbox
from signalr_groups.server.registration import register
from signalr_groups.server.resumption import resume, socket_ended
from signalr_groups.server.state import ConnectionState
from signalr_groups.server.stateful import StatefulSession

logger = logging.getLogger(__name__)

__all__ = ["ASGIReceive", "ASGISend", "ConnectionClosedError", "HubConnection"]

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]

HANDSHAKE_OK_BYTES = HANDSHAKE_OK.encode()

_OPEN = ConnectionState.OPEN
_HANDSHAKING = ConnectionState.HANDSHAKING
_CLOSING = ConnectionState.CLOSING


class HubConnection:
    """The server side of one client connection, on any transport.

    It speaks to its transport through the WebSocket ASGI messages (``websocket.receive``,
    ``websocket.disconnect``; ``websocket.send``, ``websocket.close``): the WebSocket endpoint
    passes the server's own ``receive``/``send``; the HTTP transports (Server-Sent Events, long
    polling) pass adapters that present their requests in those shapes (see :mod:`.http_transports`).
    """

    __slots__ = (
        "_client_gone", "_close_exception", "_connected", "_counted", "_loop", "_reader", "_receive",
        "_receive_cancelled", "_receiving", "_registered", "_replacing", "_send", "_socket_done",
        "_socket_lost", "_stateful_token", "_stop_waiter", "_waiting_on_streams", "_writer", "client_address",
        "client_pinged", "close_reason", "connection_id", "context", "credentials", "detached", "dispatcher",
        "flow", "hub", "keep_alive", "last_receive", "manager", "outbox", "protocol", "scope", "session",
        "settings", "state", "transport", "user", "user_identifier",
    )  # fmt: skip

    def __init__(
        self,
        *,
        hub: type[Hub],
        scope: dict[str, Any],
        send: ASGISend,
        settings: HubSettings,
        connection_id: str,
        credentials: Credentials,
        user_identifier: str | None,
        manager: HubLifetimeManager,
        flow: FlowControl | None = None,
        transport: str = "WebSockets",
        stateful_token: bool = False,
    ) -> None:
        self.hub = hub
        self.scope = scope
        self.settings = settings
        self.connection_id = connection_id
        self.credentials = credentials
        self.user = credentials.user
        self.user_identifier = user_identifier
        client = scope.get("client")
        self.client_address: str | None = address_key(str(client[0])) if client else None
        self.manager = manager
        #: "WebSockets", "ServerSentEvents" or "LongPolling".
        self.transport = transport
        #: The hub protocol chosen in the handshake.
        self.protocol: HubProtocol = JSON
        #: Long polling has an inherent keep-alive: no Ping either way (as ASP.NET Core).
        self.keep_alive = transport != "LongPolling"
        self.state = _HANDSHAKING
        self.context = HubCallerContext(
            connection_id=connection_id,
            user=credentials.user,
            user_identifier=user_identifier,
            scope=scope,
            connection=self,
        )
        self._send = send
        self.flow = flow if flow is not None else FlowControl()
        self.outbox = Outbox(
            send,
            connection_id=connection_id,
            max_bytes=settings.outbox_max_bytes,
            on_pressure=manager.fairness.report_pressure,
            on_overflow=self._overflowed,
            on_broken=self._transport_broken,
            writable=self.flow.writable if self.flow.controls_writes else None,
            before_close=self._linger if self.flow.lingers else None,
        )
        self.dispatcher = HubDispatcher(hub=hub, context=self.context, settings=settings, connection=self)
        self._close_exception: BaseException | None = None
        self._stop_waiter: asyncio.Future[None] | None = None
        #: The task awaiting receive() in the message loop, and whether we cancelled it to close.
        self._receiving: asyncio.Task[Any] | None = None
        self._receive_cancelled = False
        #: The event loop serving this connection (set by run; abort() from a thread goes through it).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: asyncio.Task[None] | None = None
        self._receive: ASGIReceive | None = None
        self._client_gone = False
        self._waiting_on_streams = False
        self.last_receive = time.monotonic()
        self.client_pinged = False
        #: Whether the client negotiated stateful reconnect (its token says so); it is used if the
        #: handshake asks for protocol version 2 on WebSockets and the hub allows it.
        self._stateful_token = stateful_token
        #: Stateful reconnect's sequence state, or None (see :mod:`.stateful`).
        self.session: StatefulSession | None = None
        #: Whether the connection waits, without a socket, for its client to reconnect.
        self.detached = False
        self._socket_lost = False
        #: Whether the client's new socket is taking over from one that still looked alive (not a hold).
        self._replacing = False
        self._socket_done: asyncio.Future[None] | None = None
        self._registered = False
        self._connected = False
        self._reader: MessageReader | None = None
        #: Why the connection ended (the ``reason`` label of the disconnects metric).
        self.close_reason = "server"
        self._counted = False

    # ------------------------------------------------------------------ what the lifetime manager calls

    def deliver(self, message: SerializedInvocation) -> None:
        """Queue a shared invocation in this connection's protocol (dropped once the connection is closing)."""
        if self.state is _OPEN or self.state is _HANDSHAKING:
            frame = message.json if self.protocol is JSON else self.protocol.invocation(message)
            if frame:
                self.outbox.put(frame, message)

    async def invoke_client(self, target: str, arguments: list[Any], timeout: float) -> Any:
        """Invoke ``target`` on this client and return its result (a client result; see :mod:`.client_results`)."""
        if not self.state.accepting:
            raise ClientGoneError("The connection is closed.")
        return await self.dispatcher.client_results.invoke(self.write, self.protocol, target, arguments, timeout)

    def write(self, frame: Frame) -> None:
        """Queue a record written for this connection alone (dropped once the connection is closing)."""
        if self.state is _OPEN or self.state is _HANDSHAKING:
            self.outbox.put(frame)

    # (what the dispatcher and the caller context ask of their connection)

    @property
    def accepting(self) -> bool:
        """Whether the connection still takes invocations (not closing)."""
        return self.state.accepting

    def should_yield(self) -> bool:
        """Whether a busy invocation loop should give the event loop back now."""
        return self.manager.should_yield()

    def on_client_ping(self) -> None:
        """The client sent a Ping (from then on, its silence times it out)."""
        self.client_pinged = True

    def on_client_close(self) -> None:
        """The client sent a Close message."""
        self._begin_close(None, None, None, send_close_message=False, reason="client_closed")

    async def room(self) -> None:
        """Wait until the outbox has room (a server stream's producer waits here)."""
        await self.outbox.room()

    def abort_by_hub(self) -> None:
        """``Context.abort()``: close for good (no ``allowReconnect``)."""
        self.abort(None, False)

    def group_names(self) -> frozenset[str]:
        """The groups this connection is in right now."""
        return self.manager.registry.groups_of(self.connection_id)

    def abort(self, error: str | None = None, allow_reconnect: bool | None = None) -> None:
        """Close the connection: a Close message (with ``error``), then a WebSocket close 1000.

        Safe from any thread: a plain ``def`` hub method runs in a worker thread, and its
        ``self.context.abort()`` is handed to the connection's event loop.
        """
        loop = self._loop
        if loop is not None:
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._abort_now, error, allow_reconnect)
                return
        self._abort_now(error, allow_reconnect)

    def _abort_now(self, error: str | None, allow_reconnect: bool | None) -> None:
        self._begin_close(error, allow_reconnect, ConnectionClosedError("aborted by the server"), reason="aborted")

    def tick(self, now: float) -> float | None:
        """Ping or time out as due; return when to look next (see :func:`.keepalive.tick`)."""
        return tick(self, now)

    def notify_hub(self, event: str, *args: Any) -> None:
        """Run the hub's lifecycle method ``event`` in the background (skipped once closing)."""
        if self.state.accepting:
            self.manager.spawn(self._notify_hub(event, *args))

    async def _notify_hub(self, event: str, *args: Any) -> None:
        if not self.state.accepting:
            return
        try:
            await self.dispatcher.calls.call_lifecycle(event, *args)
        except Exception:
            logger.exception("signalr_groups: %s failed for %s", event, self.connection_id)

    # ------------------------------------------------------------------ closing

    def _begin_close(
        self,
        error: str | None,
        allow_reconnect: bool | None,
        exception: BaseException | None,
        *,
        discard_pending: bool = False,
        send_close_message: bool = True,
        reason: str = "server",
    ) -> None:
        if not self.state.accepting:
            return
        self.state = _CLOSING
        self.close_reason = reason
        self._close_exception = exception
        self.outbox.close(
            self.protocol.close(error, allow_reconnect) if send_close_message else None, discard_pending=discard_pending
        )
        self._wake_reader()
        if self.detached:
            # Nothing runs the connection while it waits for its client: end it here.
            self.detached = False
            self.manager.spawn(self._teardown(self._registered, self._connected))

    def _overflowed(self) -> None:
        self._begin_close(
            f"{GENERIC_CLOSE_ERROR} The client did not read its messages fast enough.",
            True,
            ConnectionClosedError("outbox overflow"),
            discard_pending=True,
            reason="outbox_overflow",
        )
        metrics.outbox_overflow(self.manager.hub_key)

    def _transport_broken(self) -> None:
        if self.session is not None and self.state.accepting:
            self._socket_lost = True  # stateful reconnect: wait for the client's next socket
        elif self.state.accepting:
            self.state = _CLOSING
            self.close_reason = "transport_error"
        self._wake_reader()

    async def _linger(self) -> None:
        """Once the Close message is written: let the client read it and close first (see :mod:`.flow`)."""
        if not self._client_gone and self._receive is not None:
            self._client_gone = await self.flow.linger(self._receive)

    def close_for(self, error: ProtocolError) -> None:
        """Close after a protocol error: Close message with the reason, reconnect allowed (as ASP.NET)."""
        logger.info("signalr_groups: protocol error on %s: %s", self.connection_id, error)
        self._begin_close(
            f"{GENERIC_CLOSE_ERROR} {type(error).__name__}: {error}", True, error, reason="protocol_error"
        )

    def _wake_reader(self) -> None:
        """Cancel the message loop's pending ``receive()`` (we are closing)."""
        stop = self._stop_waiter
        if stop is not None and not stop.done():
            stop.set_result(None)
        receiving = self._receiving
        if receiving is not None and not self._receive_cancelled and receiving is not asyncio.current_task():
            self._receive_cancelled = True
            receiving.cancel()

    # ------------------------------------------------------------------ the connection's life

    async def run(self, receive: ASGIReceive) -> None:
        """Serve the connection on its first socket: handshake, registration, the message loop; then cleanup,
        or (stateful reconnect, the socket lost) wait for the client's next socket (:meth:`resume`)."""
        handshake = await read_handshake(
            receive,
            self._send,
            max_message_size=self.settings.max_message_size,
            timeout=self.settings.handshake_timeout,
            protocols=self.settings.protocols,
            binary_transport=self.transport != "ServerSentEvents",
        )
        if handshake is None:
            self.flow.close()
            return
        self.protocol = self.dispatcher.protocol = handshake.protocol
        self.outbox.binary = handshake.protocol.binary
        if (
            self._stateful_token
            and handshake.version >= 2
            and self.transport == "WebSockets"
            and self.settings.stateful_reconnects_for(self.hub.hub_key())
        ):
            # As ASP.NET Core: negotiated, and a version-2 handshake (an older client gets none).
            session = self.session = self.dispatcher.session = StatefulSession(
                self.settings.stateful_reconnect_buffer_size
            )
            self.outbox.resumable(session, self.protocol.ping, self.protocol.sequence)
        loop = self._loop = asyncio.get_running_loop()
        self._receive = receive
        if self.session is not None:
            # (Only a resumable connection can be taken over by a new socket, which waits for this.)
            self._socket_done = loop.create_future()
        # Until the message loop runs (registration, the handshake's answer, on_connected) nothing
        # reads what the client sends: under daphne, stop reading the socket meanwhile.
        self.flow.pause_reading("starting")
        try:
            self._registered = await register(self, self._begin_close)
            # Answer the handshake only now that the connection is reachable (its user's and
            # account's groups, its stored groups): a send, a revocation or a "disconnect
            # everywhere" issued once the client's start() returned cannot miss it. Anything
            # already queued (a Close, say) follows the answer.
            if self.protocol.binary:
                # As ASP.NET Core (the transfer format is set before the answer): a binary frame.
                await self._send({"type": "websocket.send", "bytes": HANDSHAKE_OK_BYTES})
            else:
                await self._send({"type": "websocket.send", "text": HANDSHAKE_OK})
            if self.state is _HANDSHAKING:
                self.state = _OPEN
            metrics.connection_opened(self.manager.hub_key, self.transport, self.protocol.name)
            self._counted = True
            self.outbox.last_write = self.last_receive = time.monotonic()
            self._writer = asyncio.ensure_future(self.outbox.run())
            if self.flow.direct_writes:
                self.outbox.direct = self.flow
            if self.state is _OPEN:
                try:
                    await self.dispatcher.calls.call_lifecycle("on_connected")
                    self._connected = True
                except Exception:
                    logger.exception("signalr_groups: on_connected failed for %s", self.connection_id)
                    self._begin_close(
                        self.dispatcher.calls.error_text("on_connected", None),
                        False,
                        None,
                        reason="on_connected_failed",
                    )
            self.flow.resume_reading("starting")
            reader, records, error = handshake.reader, handshake.records, handshake.error
            del handshake  # (not kept for the connection's life)
            await read_messages(self, receive, reader, records, error)
        except BaseException:
            self._socket_lost = False  # cancelled by the server (shutting down): end, do not wait for the client
            raise
        finally:
            await socket_ended(self)

    @property
    def resumable(self) -> bool:
        """Whether a new socket from the client may take this connection over (stateful reconnect)."""
        return self.session is not None and self._registered and self.state.accepting

    async def resume(self, receive: ASGIReceive, send: ASGISend, flow: FlowControl) -> None:
        """Serve the connection on the client's new socket (stateful reconnect; see :func:`.resumption.resume`)."""
        await resume(self, receive, send, flow)

    def expire(self, reason: str) -> None:
        """End a connection held for its client (see :class:`~.stateful.HeldConnections`)."""
        if self.detached and self.state.accepting:
            logger.info("signalr_groups: connection %s ended: %s", self.connection_id, reason)
            error = ConnectionClosedError(f"The client did not reconnect: {reason}.")
            self._begin_close(None, None, error, reason="reconnect_expired")

    # ------------------------------------------------------------------ cleanup

    async def _teardown(self, registered: bool, connected: bool) -> None:
        if self.state.accepting:
            self.state = _CLOSING
        await self.dispatcher.cancel()
        try:
            if connected:
                # As ASP.NET Core: the hub hears of the disconnect while the connection is still in
                # its groups, so on_disconnected can remove it from groups or tell the other members.
                try:
                    await self.dispatcher.calls.call_lifecycle("on_disconnected", self._close_exception)
                except Exception:
                    logger.exception("signalr_groups: on_disconnected failed for %s", self.connection_id)
        finally:
            # Even if the server cancels us (daphne's application_close_timeout) during a slow
            # on_disconnected: the registry is cleared before disconnect's first await.
            if registered:
                try:
                    await self.manager.disconnect(self)
                except Exception:
                    logger.exception("signalr_groups: leaving groups failed for %s", self.connection_id)
        writer = self._writer
        try:
            if writer is not None:
                if self.outbox.close_queued and not writer.done():
                    self.outbox.wake()
                    with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                        await asyncio.wait_for(asyncio.shield(writer), 5.0)
                if not writer.done():
                    self.flow.drop()  # the client does not read: free what the server buffered for it
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
        finally:
            self.flow.close()
            self.state = ConnectionState.CLOSED
            if self._counted:
                self._counted = False
                metrics.connection_closed(self.manager.hub_key, self.transport, self.protocol.name, self.close_reason)
            # Break the connection's reference cycles (its parts point back at it): freed at once by
            # reference counting, never left to the collector (nor kept by a gc.freeze(), see .gc_policy).
            self.outbox.unlink()
            self.dispatcher.unlink()
            self.context._unlink()
