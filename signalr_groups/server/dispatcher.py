"""The hub dispatcher of one connection: message routing, invocation queue, method lookup, binding, permissions,
invocation, completion.

Like ASP.NET Core's ``DefaultHubDispatcher``: it turns parsed records into actions; invocations of one connection run one at a time,
in order, in a worker task started on demand; a hub instance is made per invocation and per
lifecycle event; errors become the spec's Completion texts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from channels.db import database_sync_to_async

from signalr_groups.auth.permissions import check_permissions
from signalr_groups.conf import HubSettings
from signalr_groups.exceptions import HubError, PayloadError, ProtocolError
from signalr_groups.hubs.caller_context import HubCallerContext
from signalr_groups.hubs.hub import Hub
from signalr_groups.hubs.methods import HubMethod
from signalr_groups.protocol.hub_protocols import JSON, HubProtocol
from signalr_groups.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from signalr_groups.rate_limits import TokenBucket
from signalr_groups.server.client_results import ClientResults
from signalr_groups.server.dispatching import GONE, DispatchingConnection
from signalr_groups.server.hub_calls import HubCalls
from signalr_groups.server.stateful import StatefulSession
from signalr_groups.server.streams import StreamingCalls, UploadStream, pump_stream

logger = logging.getLogger(__name__)

#: A connection that queues this many times MAX_PENDING_INVOCATIONS (within one frame) is closed.
HARD_LIMIT_FACTOR: Final = 10
#: Most upload streams a client may have open at once.
MAX_CLIENT_STREAMS: Final = 100
#: The Completion error of a server stream that raised, as ASP.NET Core words it.
STREAM_ERROR: Final = "An error occurred on the server while streaming results."

Invocation = InvocationMessage | StreamInvocationMessage


class HubDispatcher:
    """Runs a connection's invocations and lifecycle events on its hub."""

    def __init__(
        self,
        *,
        hub: type[Hub],
        context: HubCallerContext,
        settings: HubSettings,
        connection: DispatchingConnection,
    ) -> None:
        self.hub = hub
        self.context = context
        self.settings = settings
        #: Calls into the hub (methods and lifecycle events, inside the filters) and their error texts.
        self.calls = HubCalls(hub, context, settings)
        self._connection = connection
        #: The connection's hub protocol (set once the handshake chose it).
        self.protocol: HubProtocol = JSON
        self._invocations: list[Invocation] = []
        self._in_flight: set[str] = set()
        # Made on first use (most connections never stream nor owe a client result): an idle
        # connection should cost as little memory as possible.
        self._streams: StreamingCalls | None = None
        self._client_results: ClientResults | None = None
        self._arrived: asyncio.Future[None] | None = None
        #: Stateful reconnect's sequence state (set after the handshake if the connection uses it).
        self.session: StatefulSession | None = None

        #: The task running queued invocations (None while idle).
        self.worker: asyncio.Task[None] | None = None
        rate = settings.max_invocations_per_second
        self._rate = TokenBucket(rate) if rate is not None else None
        self._refused = 0
        self._refusals_logged = -60.0

    def unlink(self) -> None:
        """The connection is over: drop the reference back to it (late results are dropped, as they were)."""
        self._connection = GONE

    @property
    def streams(self) -> StreamingCalls:
        """Upload streams and streaming calls (they run beside the one-at-a-time queue)."""
        streams = self._streams
        if streams is None:
            streams = self._streams = StreamingCalls(self.settings.stream_buffer_capacity)
        return streams

    @property
    def client_results(self) -> ClientResults:
        """Client results this connection's client owes the server."""
        results = self._client_results
        if results is None:
            results = self._client_results = ClientResults()
        return results

    def full_upload(self) -> UploadStream | None:
        """An upload stream whose buffer is full (the connection waits for it before reading on)."""
        return self._streams.full_upload() if self._streams is not None else None

    @property
    def pending(self) -> int:
        """How many invocations wait in the queue."""
        return len(self._invocations)

    # ------------------------------------------------------------------ incoming messages

    def dispatch_records(self, records: list[Any]) -> ProtocolError | None:
        """Dispatch records in order; return the first protocol error (later records are dropped)."""
        limit = self.settings.max_pending_invocations * HARD_LIMIT_FACTOR
        if len(records) > limit:
            # Parsing is synchronous: a frame of a million tiny records would stall the event loop.
            return ProtocolError(f"Too many messages in one frame (more than {limit}).")
        parse = self.protocol.parse
        for record in records:
            if not self._connection.accepting:
                return None
            try:
                self._dispatch(parse(record))
            except ProtocolError as exc:
                return exc
        return None

    def _dispatch(self, message: HubMessage | None) -> None:
        if message is None:
            return
        session = self.session
        if session is not None and not session.should_process(message):
            return  # a duplicate resent after a reconnect, or anything before the client's Sequence
        if isinstance(message, AckMessage):
            if session is not None:  # (without stateful reconnect Ack and Sequence are ignored, as .NET)
                session.ack(message.sequence_id)
        elif isinstance(message, SequenceMessage):
            if session is not None:
                session.reset_sequence(message.sequence_id)
        elif isinstance(message, PingMessage):
            self._connection.on_client_ping()
        elif isinstance(message, (InvocationMessage, StreamInvocationMessage)):
            self.enqueue(message)
        elif isinstance(message, CloseMessage):
            self._connection.on_client_close()
        elif isinstance(message, CancelInvocationMessage):
            if self._streams is not None:  # (an unknown id is ignored, as the spec says)
                self._streams.cancel(message.invocation_id)
        elif isinstance(message, (CompletionMessage, StreamItemMessage)):
            self.stream_message(message)

    def enqueue(self, message: Invocation) -> None:
        """Queue an invocation (a protocol error for a reused id or too many pending); start the worker."""
        invocation_id = message.invocation_id
        if invocation_id is not None and invocation_id in self._in_flight:
            raise ProtocolError(f"Invocation ID '{invocation_id}' is already in use.")
        uploads: list[UploadStream] = []
        if message.stream_ids:
            # Opened before the call is checked: the client's items may follow in the same frame.
            streams = self.streams
            if len(streams.uploads) + len(message.stream_ids) > MAX_CLIENT_STREAMS:
                raise ProtocolError(f"Too many client streams (more than {MAX_CLIENT_STREAMS}).")
            reused = next((i for i in message.stream_ids if i in streams.uploads or i in streams.discarded), None)
            if reused is not None or len(set(message.stream_ids)) != len(message.stream_ids):
                raise ProtocolError(f"Stream ID '{reused or message.stream_ids[0]}' is already in use.")
            uploads = streams.open_uploads(message.stream_ids)
        if self._rate is not None and not self._rate.take():
            # Over MAX_INVOCATIONS_PER_SECOND: refused at once, nothing runs (logged once a minute at most).
            self._refused += 1
            now = time.monotonic()
            if now - self._refusals_logged >= 60:
                logger.info(
                    "signalr_groups: %s invokes too often; %d call(s) refused",
                    self.context.connection_id,
                    self._refused,
                )
                self._refusals_logged, self._refused = now, 0
            limit = self.settings.max_invocations_per_second
            self.streams.close_uploads(uploads, discard=True)
            self._complete(invocation_id, error=f"Too many invocations: at most {limit:g} a second.")
            return
        if isinstance(message, StreamInvocationMessage) or message.stream_ids:
            # A streaming call runs at once, in its own task, beside the one-at-a-time queue (as .NET).
            limit_streams = self.settings.max_streams_per_connection
            if len(self.streams) >= limit_streams:
                self.streams.close_uploads(uploads, discard=True)
                self._complete(invocation_id, error=f"Too many streams: at most {limit_streams} at once.")
                return
            if invocation_id is not None:
                self._in_flight.add(invocation_id)
            self.streams.start(invocation_id, self._run_streaming(message, uploads))
            return
        if invocation_id is not None:
            self._in_flight.add(invocation_id)
        hard_limit = self.settings.max_pending_invocations * HARD_LIMIT_FACTOR
        if len(self._invocations) >= hard_limit:
            raise ProtocolError(f"Too many pending invocations (more than {hard_limit}).")
        self._invocations.append(message)
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._run())
        elif self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)  # a parallel worker waiting for its running ones: a slot may be free

    def stream_message(self, message: CompletionMessage | StreamItemMessage) -> None:
        """An item or the end of a client upload stream; a protocol error for an unknown id or a flood."""
        stream_id = message.invocation_id
        results = self._client_results
        if isinstance(message, CompletionMessage) and results is not None and results.complete(message):
            return  # a client result
        if isinstance(message, StreamItemMessage):
            known = self.streams.item(stream_id, message.item)
        else:
            known = self.streams.end(stream_id, message.error)
        if not known:
            raise ProtocolError(f"Received a message for unknown invocation ID '{stream_id}'.")
        stream = self.streams.uploads.get(stream_id)
        if stream is not None and stream.overflowing:
            raise ProtocolError(f"Too many items buffered for stream '{stream_id}'.")

    async def cancel(self) -> None:
        """Stop the worker and drop queued invocations (the connection is going away)."""
        worker = self.worker
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker
        self._invocations.clear()
        if self._client_results is not None:
            self._client_results.close()
        if self._streams is not None:
            await self._streams.stop()

    # ------------------------------------------------------------------ running

    async def _run(self) -> None:
        """The worker: queued invocations one at a time (``MAX_PARALLEL_INVOCATIONS_PER_CLIENT`` = 1, as .NET),
        or up to that many at once, their completions in any order."""
        parallel = self.settings.max_parallel_invocations_per_client
        running: set[asyncio.Task[None]] = set()
        try:
            while self._connection.accepting and (self._invocations or running):
                while self._invocations and len(running) < parallel and self._connection.accepting:
                    message = self._invocations.pop(0)
                    if parallel == 1:
                        await self._invoke_one(message)
                    else:
                        running.add(asyncio.ensure_future(self._invoke_one(message)))
                    # Between invocations, give the loop back when outboxes fill or time is up: the
                    # writers drain, and one client's burst does not stall the other connections.
                    if self._connection.should_yield():
                        await asyncio.sleep(0)
                if running:
                    # Wait for a slot, or for a new invocation while slots are free.
                    arrived = self._arrived = asyncio.get_running_loop().create_future()
                    try:
                        await asyncio.wait({*running, arrived}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        self._arrived = None
                        arrived.cancel()
                    running = {task for task in running if not task.done()}
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.worker = None

    async def _invoke_one(self, message: Invocation) -> None:
        try:
            await self._invoke(message)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the connection is going away
            # The hub method raised CancelledError itself: fail this invocation only.
            logger.warning("signalr_groups: hub method %r raised CancelledError", message.target)
            self._complete(message.invocation_id, error=self.calls.error_text(message.target, None))
        except Exception as exc:
            logger.exception("signalr_groups: invoking %r failed", message.target)
            self._complete(message.invocation_id, error=self.calls.error_text(message.target, exc))
        finally:
            if message.invocation_id is not None:
                self._in_flight.discard(message.invocation_id)

    def _complete(self, invocation_id: str | None, **kwargs: Any) -> None:
        if invocation_id is None:
            return
        try:
            record = self.protocol.completion(invocation_id, **kwargs)
        except PayloadError as exc:
            logger.error("signalr_groups: the result of invocation %s cannot be sent: %s", invocation_id, exc)
            base = "The hub method's result could not be serialized."
            error = f"{base} {exc}" if self.settings.detailed_errors else base
            record = self.protocol.completion(invocation_id, error=error)
        self._connection.write(record)

    async def _resolve(self, message: Invocation) -> HubMethod | None:
        """The hub method a call names, checked (mode, streams, arguments, permissions); None once answered."""
        target = message.target
        invocation_id = message.invocation_id
        method = self.hub.find_method(target)
        if method is None:
            logger.info("signalr_groups: unknown hub method %r", target)
            self._complete(invocation_id, error=f"Unknown hub method '{target}'")
            return None
        streaming = isinstance(message, StreamInvocationMessage)
        if streaming and not method.is_stream:
            self._complete(
                invocation_id,
                error=f"The client attempted to invoke the non-streaming '{target}' method with a streaming invocation.",
            )
            return None
        if method.is_stream and not streaming:
            self._complete(
                invocation_id,
                error=f"The client attempted to invoke the streaming '{target}' method with a non-streaming invocation.",
            )
            return None
        if len(message.stream_ids) != len(method.stream_params):
            expected = len(method.stream_params)
            mismatch = HubError(f"Client sent {len(message.stream_ids)} stream(s), Hub method expects {expected}.")
            self._complete(invocation_id, error=self.calls.error_text(target, mismatch))  # (.NET throws a HubException)
            return None
        problem = method.binding_error(message.arguments)
        if problem is not None:
            logger.info("signalr_groups: failed to invoke %r: %s", target, problem)
            text = f"Failed to invoke '{target}' due to an error on the server."
            if self.settings.detailed_errors:
                text = f"{text} InvalidDataException: {problem}"
            self._complete(invocation_id, error=text)
            return None
        user = self.context.user
        permissions = (*self.hub.hub_permissions(), *method.permissions)
        if permissions and not await database_sync_to_async(check_permissions)(
            permissions, user, self.hub, method.signalr_name
        ):
            logger.info("signalr_groups: %r denied to %s", target, self.context.user_identifier or "an anonymous user")
            self._complete(invocation_id, error=f"Failed to invoke '{target}' because user is unauthorized")
            return None
        return method

    async def _run_streaming(self, message: Invocation, uploads: list[UploadStream]) -> None:
        """A streaming call: a server stream's items then a Completion, or a call reading upload streams."""
        invocation_id = message.invocation_id
        method: HubMethod | None = None
        streaming = False
        try:
            method = await self._resolve(message)
            if method is None:
                return
            result = await self.calls.call_method(method, method.bind(message.arguments, uploads))
            streaming = method.is_stream  # (a failure before this point is the call's, not the stream's)
            if method.is_stream:
                stream_id = invocation_id or ""
                protocol = self.protocol
                connection = self._connection
                await pump_stream(
                    result, lambda item: connection.write(protocol.stream_item(stream_id, item)), connection.room
                )
                self._complete(invocation_id)
            else:
                self._complete(invocation_id, result=result, has_result=True)
        except asyncio.CancelledError:
            if self.streams.cancelled_by_client(invocation_id):
                self._complete(invocation_id)  # as ASP.NET Core: a Completion follows the cancel
                return
            raise
        except Exception as exc:
            if not isinstance(exc, HubError):
                logger.exception("signalr_groups: streaming call %r raised", message.target)
            if streaming:
                self._complete(invocation_id, error=self.calls.described(STREAM_ERROR, exc))
            else:
                self._complete(invocation_id, error=self.calls.error_text(message.target, exc))
        finally:
            self.streams.close_uploads(uploads, discard=True)
            if invocation_id is not None:
                self._in_flight.discard(invocation_id)

    async def _invoke(self, message: Invocation) -> None:
        target = message.target
        invocation_id = message.invocation_id
        method = await self._resolve(message)
        if method is None:
            return
        try:
            result = await self.calls.call_method(method, message.arguments)
        except asyncio.CancelledError:
            raise
        except HubError as exc:
            self._complete(invocation_id, error=self.calls.error_text(target, exc))
            return
        except Exception as exc:
            logger.exception("signalr_groups: hub method %r raised", target)
            self._complete(invocation_id, error=self.calls.error_text(target, exc))
            return
        self._complete(invocation_id, result=result, has_result=True)
