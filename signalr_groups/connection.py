"""One client connection: handshake, message loop, invocations, keep-alive and a bounded outbox."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from channels.db import database_sync_to_async

from signalr_groups.clients import HubCallerClients
from signalr_groups.conf import HubSettings
from signalr_groups.context import HubCallerContext
from signalr_groups.exceptions import HandshakeError, HubError, PayloadError, ProtocolError
from signalr_groups.groups import GroupManager
from signalr_groups.hub import Hub
from signalr_groups.lifetime import HubLifetimeManager
from signalr_groups.permissions import check_permissions
from signalr_groups.protocol.handshake import HANDSHAKE_OK, parse_handshake, write_handshake_error
from signalr_groups.protocol.json import (
    PING_RECORD,
    RecordReader,
    parse_message,
    write_close,
    write_completion,
)
from signalr_groups.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from signalr_groups.user_groups import join_stored_groups

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]

GENERIC_CLOSE_ERROR: Final = "Connection closed with an error."
#: A connection that queues this many times MAX_PENDING_INVOCATIONS (within one frame) is closed.
_HARD_LIMIT_FACTOR: Final = 10
#: Most upload-stream ids a client may have open (they are accepted only to be dropped).
_MAX_CLIENT_STREAMS: Final = 100
#: Records are batched into one frame up to about this many characters.
_BATCH_CHARS: Final = 64 * 1024


class ConnectionClosedError(Exception):
    """Passed to ``on_disconnected`` when a connection ended without a clean close."""


class HubConnection:
    """The server side of one client connection (transport-independent beyond ASGI send/receive)."""

    def __init__(
        self,
        *,
        hub: type[Hub],
        scope: dict[str, Any],
        send: ASGISend,
        settings: HubSettings,
        connection_id: str,
        user: Any,
        user_identifier: str | None,
        manager: HubLifetimeManager,
        account_id: str | None = None,
        session_key: str | None = None,
        auth_expires_at: float | None = None,
        auth_kind: str | None = None,
        credential_check: Callable[[], bool] | None = None,
    ) -> None:
        self.hub = hub
        self.scope = scope
        self.settings = settings
        self.connection_id = connection_id
        self.user = user
        self.user_identifier = user_identifier
        self.manager = manager
        #: The Django user's pk (account-level revocation) and, for cookie logins, the session key.
        self.account_id = account_id
        self.session_key = session_key
        #: Unix time at which the session or access token that authenticated us expires.
        self.auth_expires_at = auth_expires_at
        self.auth_kind = auth_kind
        self._credential_check = credential_check
        self.context = HubCallerContext(
            connection_id=connection_id,
            user=user,
            user_identifier=user_identifier,
            scope=scope,
            abort=lambda: self.abort(None, False),
            group_names=lambda: frozenset(self.manager.connection_groups.get(connection_id, ())),
        )
        self._send = send
        self._outbox: deque[str | None] = deque()
        self._outbox_chars = 0
        # Plain futures made on demand rather than asyncio.Events (each carries a deque): an idle
        # connection should cost as little memory as possible.
        self._wake_waiter: asyncio.Future[None] | None = None
        self._stopped = False
        self._stop_waiter: asyncio.Future[None] | None = None
        #: The task awaiting receive() in the message loop, and whether we cancelled it to close.
        self._receiving: asyncio.Task[Any] | None = None
        #: The event loop serving this connection (set by run; abort() from a thread goes through it).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._receive_cancelled = False
        self._closing = False
        self._close_queued = False
        self._close_exception: BaseException | None = None
        self._writer: asyncio.Task[None] | None = None
        self._invocations: list[InvocationMessage | StreamInvocationMessage] = []
        self._in_flight: set[str] = set()
        self._client_streams: set[str] = set()
        self._worker: asyncio.Task[None] | None = None
        now = time.monotonic()
        self.last_write = now
        self.last_receive = now
        self.client_pinged = False

    # ------------------------------------------------------------------ outgoing

    def deliver(self, record: str) -> None:
        """Queue a serialized record; close the connection if its outbox overflows."""
        if self._closing:
            return
        self._outbox.append(record)
        self._outbox_chars += len(record)
        if self._outbox_chars > self.settings.outbox_max_bytes >> 2:
            self.manager.pressure = True
        if self._outbox_chars > self.settings.outbox_max_bytes:
            logger.warning(
                "signalr_groups: connection %s is not reading; its outbox passed %d bytes, closing it",
                self.connection_id,
                self.settings.outbox_max_bytes,
            )
            self._begin_close(
                f"{GENERIC_CLOSE_ERROR} The client did not read its messages fast enough.",
                True,
                ConnectionClosedError("outbox overflow"),
                discard_pending=True,
            )
            return
        self._wake_writer()

    def _begin_close(
        self,
        error: str | None,
        allow_reconnect: bool | None,
        exception: BaseException | None,
        *,
        discard_pending: bool = False,
        send_close_message: bool = True,
    ) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_exception = exception
        if discard_pending:
            self._outbox.clear()
            self._outbox_chars = 0
        if send_close_message:
            self._outbox.append(write_close(error, allow_reconnect))
        self._outbox.append(None)
        self._close_queued = True
        self._wake_writer()
        self._wake_reader()

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
                loop.call_soon_threadsafe(
                    self._begin_close, error, allow_reconnect, ConnectionClosedError("aborted by the server")
                )
                return
        self._begin_close(error, allow_reconnect, ConnectionClosedError("aborted by the server"))

    def heartbeat(self, now: float) -> None:
        """Called about once a second: ping an idle client, close one that has gone silent."""
        if self._closing:
            return
        settings = self.settings
        if self._worker is not None:
            # Dispatching (as ASP.NET Core, the client timeout pauses while a hub method runs).
            self.last_receive = now
        elif self.client_pinged and now - self.last_receive > settings.client_timeout:
            self._begin_close(
                f"{GENERIC_CLOSE_ERROR} The client sent nothing for {settings.client_timeout:g} seconds.",
                True,
                ConnectionClosedError("client timeout"),
            )
            return
        if self.auth_expires_at is not None and time.time() >= self.auth_expires_at:
            # A token can be renewed by the client's accessTokenFactory; an expired session cannot.
            if self.auth_kind == "token":
                self._begin_close("Your access token expired.", True, ConnectionClosedError("token expired"))
            else:
                self._begin_close("Your session expired.", False, ConnectionClosedError("session expired"))
            return
        if not self._outbox and now - self.last_write >= settings.keep_alive_interval:
            self.deliver(PING_RECORD)

    async def _write_loop(self) -> None:
        outbox = self._outbox
        try:
            while True:
                if not outbox:
                    waiter = self._wake_waiter = asyncio.get_running_loop().create_future()
                    await waiter
                    continue
                parts: list[str] = []
                size = 0
                close_after = False
                while outbox:
                    item = outbox.popleft()
                    if item is None:
                        close_after = True
                        break
                    parts.append(item)
                    size += len(item)
                    if size >= _BATCH_CHARS:
                        break
                self._outbox_chars = max(0, self._outbox_chars - size)
                if parts:
                    self.last_write = time.monotonic()
                    await self._send({"type": "websocket.send", "text": "".join(parts)})
                if close_after:
                    await self._send({"type": "websocket.close", "code": 1000})
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport is gone
            logger.debug("signalr_groups: writing to %s failed: %r", self.connection_id, exc)
            self._closing = True
            self._wake_reader()

    # ------------------------------------------------------------------ the connection's life

    async def handshake(
        self, receive: ASGIReceive, reader: RecordReader
    ) -> tuple[list[str], ProtocolError | None] | None:
        """Read and check the handshake (``run`` answers it); return the records that followed it, or None."""
        deadline = time.monotonic() + self.settings.handshake_timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                logger.info("signalr_groups: no handshake within %gs; closing", self.settings.handshake_timeout)
                await self._send({"type": "websocket.close", "code": 1000})
                return None
            if message["type"] == "websocket.disconnect":
                return None
            text = self._frame_text(message)
            if text is None:
                await self._send_raw_and_close(write_handshake_error("Handshake was canceled."))
                return None
            records, error = reader.feed(text)
            if records:
                try:
                    parse_handshake(records[0])
                except HandshakeError as exc:
                    await self._send_raw_and_close(write_handshake_error(str(exc)))
                    return None
                return records[1:], error
            if error is not None:
                await self._send_raw_and_close(write_handshake_error("Handshake was canceled."))
                return None

    async def _send_raw_and_close(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})
        await self._send({"type": "websocket.close", "code": 1000})

    @staticmethod
    def _frame_text(message: dict[str, Any]) -> str | None:
        text = message.get("text")
        if text is not None:
            return str(text)
        data = message.get("bytes")
        if data is None:
            return ""
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def deliver_close_for(self, error: ProtocolError) -> None:
        """Close after a protocol error: Close message with the reason, reconnect allowed (as ASP.NET)."""
        logger.info("signalr_groups: protocol error on %s: %s", self.connection_id, error)
        self._begin_close(f"{GENERIC_CLOSE_ERROR} {type(error).__name__}: {error}", True, error)

    async def run(self, receive: ASGIReceive) -> None:
        """Serve the connection until it closes: handshake, registration, the message loop, cleanup."""
        reader = RecordReader(self.settings.max_message_size)
        handshake = await self.handshake(receive, reader)
        if handshake is None:
            return
        self._loop = asyncio.get_running_loop()
        registered = connected = False
        unreachable = f"{GENERIC_CLOSE_ERROR} The server cannot reach its channel layer; retry."
        try:
            try:
                # Bounded: a hung layer or database must not keep the client waiting for the answer.
                async with asyncio.timeout(self.settings.handshake_timeout):
                    try:
                        await self.manager.connect(self)
                        registered = True
                    except Exception as exc:
                        logger.exception("signalr_groups: could not register %s (layer down?)", self.connection_id)
                        self._begin_close(unreachable, True, exc)
                    # A logout or password change that committed between the authentication check
                    # and registration found no connection to close: look again now we are reachable.
                    check = self._credential_check
                    if registered and check is not None and not await database_sync_to_async(check)():
                        self._begin_close("Your credentials are no longer valid.", False, None)
                    if registered and not self._closing and self.user_identifier is not None:
                        # User-scoped memberships: this new connection joins its user's stored groups.
                        try:
                            await join_stored_groups(self.manager, self.connection_id, self.user_identifier)
                        except Exception:
                            logger.exception(
                                "signalr_groups: %s could not rejoin its user's groups", self.connection_id
                            )
            except TimeoutError as exc:
                logger.warning("signalr_groups: registering %s took too long; closing it", self.connection_id)
                self._begin_close(unreachable, True, exc)
            # Answer the handshake only now that the connection is reachable (its user's and
            # account's groups, its stored groups): a send, a revocation or a "disconnect
            # everywhere" issued once the client's start() returned cannot miss it. Anything
            # already queued (a Close, say) follows the answer.
            await self._send({"type": "websocket.send", "text": HANDSHAKE_OK})
            self.last_write = self.last_receive = time.monotonic()
            self._writer = asyncio.ensure_future(self._write_loop())
            if not self._closing:
                try:
                    await self._call_lifecycle("on_connected")
                    connected = True
                except Exception:
                    logger.exception("signalr_groups: on_connected failed for %s", self.connection_id)
                    self._begin_close(self._error_text("on_connected", None), False, None)
            await self._message_loop(receive, reader, *handshake)
        finally:
            await self._teardown(registered, connected)

    async def _message_loop(
        self, receive: ASGIReceive, reader: RecordReader, pending: list[str], error: ProtocolError | None
    ) -> None:
        """Read frames until the client leaves or we close.

        ``receive()`` is awaited directly, in this task: no task or future per frame, none parked
        per idle connection. A close we start (``_begin_close``) cancels that await.
        """
        if not self._closing:
            await self._process(pending, error)
        while not self._closing:
            task = asyncio.current_task()
            self._receiving = task
            try:
                message = await receive()
            except asyncio.CancelledError:
                # Our own wake-up (we are closing) ends the loop; a cancel from the server as well
                # (its count stays above zero after ours is taken back) propagates.
                if self._receive_cancelled and task is not None and task.uncancel() == 0:
                    break
                raise
            finally:
                self._receiving = None
            if message["type"] == "websocket.disconnect":
                code = message.get("code", 1005)
                self._closing = True
                if code not in (1000, 1001):
                    self._close_exception = ConnectionClosedError(f"The client went away (close code {code}).")
                break
            self.last_receive = time.monotonic()
            text = self._frame_text(message)
            if text is None:
                self.deliver_close_for(ProtocolError("A binary frame is not valid UTF-8."))
                break
            records, error = reader.feed(text)
            await self._process(records, error)
            worker = self._worker
            if worker is not None and len(self._invocations) >= self.settings.max_pending_invocations:
                # Backpressure: stop reading the socket until the queued invocations have run.
                await self._wait_for_worker_or_stop(worker)
                self.last_receive = time.monotonic()

    async def _wait_for_worker_or_stop(self, worker: asyncio.Task[None]) -> None:
        """Wait until the invocation worker is done, or the connection is closing."""
        if self._stopped:
            return
        stop = self._stop_waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait({worker, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stop_waiter = None
            stop.cancel()

    def _wake_writer(self) -> None:
        """Wake the writer if it waits for records."""
        waiter = self._wake_waiter
        if waiter is not None:
            self._wake_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _wake_reader(self) -> None:
        """Cancel the message loop's pending ``receive()`` (we are closing)."""
        self._stopped = True
        stop = self._stop_waiter
        if stop is not None and not stop.done():
            stop.set_result(None)
        receiving = self._receiving
        if receiving is not None and not self._receive_cancelled and receiving is not asyncio.current_task():
            self._receive_cancelled = True
            receiving.cancel()

    async def _process(self, records: list[str], error: ProtocolError | None) -> None:
        """Dispatch complete records; after a protocol error, answer the invocations queued before it, then close.

        Like ASP.NET Core (one invocation at a time, run inline), records that came before the bad
        one are still answered; the Close message follows their completions.
        """
        failure = self._handle_records(records)
        if failure is None:
            failure = error
        if failure is None or self._closing:
            return
        worker = self._worker
        if worker is not None:
            await self._wait_for_worker_or_stop(worker)
        self.deliver_close_for(failure)

    def _handle_records(self, records: list[str]) -> ProtocolError | None:
        """Dispatch records in order; return the first protocol error (later records are dropped)."""
        limit = self.settings.max_pending_invocations * _HARD_LIMIT_FACTOR
        if len(records) > limit:
            # Parsing is synchronous: a frame of a million tiny records would stall the event loop.
            return ProtocolError(f"Too many messages in one frame (more than {limit}).")
        for record in records:
            if self._closing:
                return None
            try:
                message = parse_message(record)
                self._dispatch(message)
            except ProtocolError as exc:
                return exc
        return None

    def _dispatch(self, message: Any) -> None:
        if message is None or isinstance(message, (PingMessage, AckMessage, SequenceMessage)):
            if isinstance(message, PingMessage):
                self.client_pinged = True
            return
        if isinstance(message, (InvocationMessage, StreamInvocationMessage)):
            invocation_id = message.invocation_id
            if invocation_id is not None:
                if invocation_id in self._in_flight:
                    raise ProtocolError(f"Invocation ID '{invocation_id}' is already in use.")
                self._in_flight.add(invocation_id)
            if message.stream_ids:
                # Upload streams are not supported: the invocation fails, and the items the
                # client then sends on these ids are dropped instead of treated as errors.
                if len(self._client_streams) + len(message.stream_ids) > _MAX_CLIENT_STREAMS:
                    raise ProtocolError(f"Too many client streams (more than {_MAX_CLIENT_STREAMS}).")
                self._client_streams.update(message.stream_ids)
            hard_limit = self.settings.max_pending_invocations * _HARD_LIMIT_FACTOR
            if len(self._invocations) >= hard_limit:
                raise ProtocolError(f"Too many pending invocations (more than {hard_limit}).")
            self._invocations.append(message)
            if self._worker is None:
                self._worker = asyncio.ensure_future(self._invoke_loop())
            return
        if isinstance(message, CloseMessage):
            self._begin_close(None, None, None, send_close_message=False)
            return
        if isinstance(message, CancelInvocationMessage):
            return  # no streams yet: a cancel for an unknown id is ignored, as the spec says
        if isinstance(message, (CompletionMessage, StreamItemMessage)):
            if message.invocation_id in self._client_streams:
                if isinstance(message, CompletionMessage):
                    self._client_streams.discard(message.invocation_id)
                return
            raise ProtocolError(f"Received a message for unknown invocation ID '{message.invocation_id}'.")

    # ------------------------------------------------------------------ invocations

    def _make_hub(self) -> Hub:
        hub = self.hub()
        hub.context = self.context
        hub.clients = HubCallerClients(self.manager.hub_key, self.connection_id)
        hub.groups = GroupManager(self.manager.hub_key)
        return hub

    async def group_access_revoked(self, group: str, reason: str) -> None:
        """Tell the hub that this connection lost a restricted group (``Hub.on_group_access_revoked``)."""
        if self._closing:
            return
        try:
            await self._call_lifecycle("on_group_access_revoked", group, reason)
        except Exception:
            logger.exception("signalr_groups: on_group_access_revoked failed for %s", self.connection_id)

    async def _call_lifecycle(self, name: str, *args: Any) -> None:
        function = getattr(self._make_hub(), name)
        if inspect.iscoroutinefunction(function):
            await function(*args)
        else:
            await database_sync_to_async(function)(*args)

    def _error_text(self, target: str, exc: BaseException | None) -> str:
        if target == "on_connected":
            base = GENERIC_CLOSE_ERROR
        else:
            base = f"An unexpected error occurred invoking '{target}' on the server."
        if isinstance(exc, HubError):
            return f"{base} HubException: {exc}"
        if exc is not None and self.settings.detailed_errors:
            return f"{base} {type(exc).__name__}: {exc}"
        return base

    async def _invoke_loop(self) -> None:
        try:
            while self._invocations and not self._closing:
                message = self._invocations.pop(0)
                try:
                    await self._invoke(message)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # the connection is going away
                    # The hub method raised CancelledError itself: fail this invocation only.
                    logger.warning("signalr_groups: hub method %r raised CancelledError", message.target)
                    self._complete(message.invocation_id, error=self._error_text(message.target, None))
                except Exception as exc:
                    logger.exception("signalr_groups: invoking %r failed", message.target)
                    self._complete(message.invocation_id, error=self._error_text(message.target, exc))
                finally:
                    if message.invocation_id is not None:
                        self._in_flight.discard(message.invocation_id)
                # Between invocations, give the loop back when outboxes fill or time is up: the
                # writers drain, and one client's burst does not stall the other connections.
                if self.manager.should_yield():
                    await asyncio.sleep(0)
        finally:
            self._worker = None

    def _complete(self, invocation_id: str | None, **kwargs: Any) -> None:
        if invocation_id is None:
            return
        try:
            record = write_completion(invocation_id, **kwargs)
        except PayloadError as exc:
            logger.error("signalr_groups: the result of invocation %s cannot be sent: %s", invocation_id, exc)
            record = write_completion(invocation_id, error=self._error_text_for_payload(exc))
        self.deliver(record)

    def _error_text_for_payload(self, exc: PayloadError) -> str:
        base = "The hub method's result could not be serialized."
        return f"{base} {exc}" if self.settings.detailed_errors else base

    async def _invoke(self, message: InvocationMessage | StreamInvocationMessage) -> None:
        target = message.target
        invocation_id = message.invocation_id
        method = self.hub.find_method(target)
        if method is None:
            logger.info("signalr_groups: unknown hub method %r", target)
            self._complete(invocation_id, error=f"Unknown hub method '{target}'")
            return
        if isinstance(message, StreamInvocationMessage):
            self._complete(
                invocation_id,
                error=f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation.",
            )
            return
        problem = method.binding_error(message.arguments)
        if message.stream_ids:
            problem = f"Client sent {len(message.stream_ids)} stream(s), Hub method expects 0."
        if problem is not None:
            logger.info("signalr_groups: failed to invoke %r: %s", target, problem)
            text = f"Failed to invoke '{target}' due to an error on the server."
            if self.settings.detailed_errors:
                text = f"{text} InvalidDataException: {problem}"
            self._complete(invocation_id, error=text)
            return
        permissions = (*self.hub.hub_permissions(), *method.permissions)
        if permissions and not await database_sync_to_async(check_permissions)(
            permissions, self.user, self.hub, method.signalr_name
        ):
            logger.info("signalr_groups: %r denied to %s", target, self.user_identifier or "an anonymous user")
            self._complete(invocation_id, error=f"Failed to invoke '{target}' because user is unauthorized")
            return
        function = getattr(self._make_hub(), method.python_name)
        try:
            if method.is_async:
                result = await function(*message.arguments)
            else:
                result = await database_sync_to_async(function)(*message.arguments)
        except asyncio.CancelledError:
            raise
        except HubError as exc:
            self._complete(invocation_id, error=self._error_text(target, exc))
            return
        except Exception as exc:
            logger.exception("signalr_groups: hub method %r raised", target)
            self._complete(invocation_id, error=self._error_text(target, exc))
            return
        self._complete(invocation_id, result=result, has_result=True)

    # ------------------------------------------------------------------ cleanup

    async def _teardown(self, registered: bool, connected: bool) -> None:
        self._closing = True
        worker = self._worker
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        self._invocations.clear()
        try:
            if connected:
                # As ASP.NET Core: the hub hears of the disconnect while the connection is still in
                # its groups, so on_disconnected can remove it from groups or tell the other members.
                try:
                    await self._call_lifecycle("on_disconnected", self._close_exception)
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
        if writer is not None:
            if self._close_queued and not writer.done():
                self._wake_writer()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(writer), 5.0)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
