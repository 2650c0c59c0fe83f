"""Flow control between a connection and its ASGI server, so that no client can grow the server's memory.

uvicorn applies backpressure by itself: it stops reading a socket whose messages the application
does not ``receive()``, and its ``send()`` waits while the socket's write buffer is full. daphne
does neither: it reads every frame into an unbounded queue, and buffers every write in Twisted.
Under daphne this module supplies what is missing, through daphne's own Twisted transport:

- **reading**: the socket stops being read (``transport.pauseProducing()``) while daphne's queue
  holds more than :data:`QUEUE_HIGH` frames, or while the connection waits for its invocations
  to drain, and resumes below :data:`QUEUE_LOW`;
- **writing**: the connection registers as the streaming producer of the TCP transport (in
  place of the HTTP channel daphne leaves there after the upgrade); Twisted pauses it when its
  write buffer passes 64 KiB and resumes it when the buffer drains, and the outbox waits for
  that before it writes the next frame — so a client that stops reading fills the outbox, whose
  bound (``OUTBOX_MAX_BYTES``) then closes it;
- **dropping**: a connection whose last frames cannot be written (the client stopped reading)
  is dropped at once (``dropConnection(abort=True)``), freeing Twisted's buffer;
- **frame-level violations**: answered with their close code (autobahn's ``failByDrop`` off)
  instead of a dropped TCP connection;
- **direct writes**: a record for a socket that has room, with nothing queued before it, is written
  as a whole WebSocket frame (built once per send, see :mod:`.uvicorn_socket`) to the TCP
  transport, as autobahn's ``sendPreparedMessage`` would, unless compression was negotiated.
  When Twisted's write buffer is empty (and the connection is plain TCP, not TLS), the frame is
  sent on the socket at once and only what the socket does not take goes to Twisted's buffer:
  Twisted would buffer all of it and send it on a later loop turn, registering and unregistering
  the socket with the selector for every frame (two ``epoll_ctl`` calls per frame);
- **closing**: after the Close message the connection lingers (up to :data:`CLOSE_LINGER`
  seconds) for the client to close first. autobahn gives the closing handshake one second and
  then drops the TCP connection; a client that had not read the Close message by then would
  lose it to the reset.

Reading daphne's queue and protocol uses two of daphne's internals (the ``receive`` callable is
the queue's bound ``get``; ``send`` is a ``functools.partial`` of ``Server.handle_reply`` over
the protocol, found under middleware through ``__wrapped__`` or, for Channels' session middleware,
``real_send``); :func:`missing_daphne_internals` names them if a daphne release changes them, and
the connection then falls back to no flow control, as before. The direct send reads Twisted's TCP
transport's buffer attributes (:data:`_TCP_INTERNALS`); a transport without them is written through
``transport.write()`` only. Everything else used is public Twisted (``IPushProducer``,
``pauseProducing``) and autobahn (``registerProducer``, ``dropConnection``) API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

logger = logging.getLogger(__name__)

#: Frames in daphne's queue above which the socket stops being read (a frame is at most 1 MiB in daphne).
QUEUE_HIGH: Final = 8
#: Frames in daphne's queue at or below which a socket paused for the queue is read again.
QUEUE_LOW: Final = 2
#: Seconds a closing connection waits for the client to close first, under daphne (see above).
CLOSE_LINGER: Final = 3.0


class FlowControl:
    """No flow control needed: the server applies backpressure itself (uvicorn, and the test communicator)."""

    #: Whether :meth:`writable` can ever wait (the outbox skips the call otherwise).
    controls_writes = False
    #: Whether a closing connection waits for the client to close first (:meth:`linger`).
    lingers = False
    #: Whether :meth:`write_frame` can write (the outbox skips the call otherwise).
    direct_writes = False

    def write_frame(self, frame: bytes) -> bool:
        """Write a whole WebSocket frame to the socket now, bypassing ASGI; False if this server cannot."""
        return False

    def before_receive(self) -> None:
        """Called before each ``receive()``."""

    def after_receive(self) -> None:
        """Called after each ``receive()``."""

    def pause_reading(self, reason: str = "invocations") -> None:
        """Stop reading the socket (the connection waits for its invocations, registers, or closes)."""

    def resume_reading(self, reason: str = "invocations") -> None:
        """Read the socket again (once no other reason holds it paused)."""

    async def writable(self) -> None:
        """Wait until the socket can take another frame without growing the server's buffers."""

    def drop(self) -> None:
        """Drop the connection now, discarding what could not be written."""

    def close(self) -> None:
        """The connection is over: release the transport."""

    async def linger(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
        """Wait (up to :data:`CLOSE_LINGER` s) for the client to close; True if it did. Frames meanwhile are dropped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_LINGER):
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                return True
        return False


class _TwistedWriteProducer(FlowControl):
    """Write backpressure from Twisted: registered as a streaming producer, paused while its buffer is full."""

    controls_writes = True
    _write_paused = False
    _waiter: asyncio.Future[None] | None = None

    # --- IPushProducer, called by Twisted when its write buffer fills up and drains

    def pauseProducing(self) -> None:
        """Twisted's write buffer is full."""
        self._write_paused = True

    def resumeProducing(self) -> None:
        """Twisted's write buffer drained."""
        self._write_paused = False
        self._wake()

    def stopProducing(self) -> None:
        """The connection is gone: nobody should wait to write."""
        self._write_paused = False
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def writable(self) -> None:
        """Wait while Twisted's write buffer is over its mark (64 KiB)."""
        while self._write_paused:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter


#: The attributes of Twisted's TCP transport (``twisted.internet.tcp.Connection``) that a direct send reads.
_TCP_INTERNALS: Final = ("socket", "dataBuffer", "offset", "_tempDataLen", "connected", "disconnecting", "TLS")


def _idle_plain_tcp(transport: Any) -> bool:
    """Whether ``transport`` is an open TCP connection without TLS whose write buffer is empty."""
    return (
        transport.TLS is False
        and transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnected", False)
        and not transport._tempDataLen
        and len(transport.dataBuffer) == transport.offset
    )


def _send_some(sock: Any, frame: bytes) -> bytes:
    """Send what the socket takes of ``frame`` now; return the rest (all of it on any error: Twisted handles those)."""
    try:
        sent = sock.send(frame)
    except OSError:  # would block, interrupted, or the connection is gone: Twisted's own write finds out
        return frame
    return frame[sent:] if sent < len(frame) else b""


class DaphneFlowControl(_TwistedWriteProducer):
    """Flow control through daphne's Twisted transport (see the module docstring)."""

    lingers = True

    def __init__(self, protocol: Any, queue: asyncio.Queue[Any]) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._queue = queue
        self._paused_for: set[str] = set()
        #: Set once the linger began: a later pause (the message loop's "closing") must not undo its resume.
        self._lingering = False
        self._registered = False
        # After the upgrade, daphne leaves the HTTP channel registered as the TCP transport's
        # producer: take its place, so that Twisted tells us (not it) when the write buffer fills
        # and drains, and nobody else resumes reading behind our back.
        # autobahn answers a frame-level violation (a frame over the size limit, invalid UTF-8, a
        # reserved bit) by dropping TCP unless told otherwise: send the close code (1009, 1007,
        # 1002) first, as the WebSocket RFC and uvicorn do.
        if getattr(protocol, "failByDrop", False):
            protocol.failByDrop = False
        if getattr(self._transport, "producer", None) is not None:
            self._transport.unregisterProducer()
        self._transport.registerProducer(self, True)
        self._registered = True
        #: Whether the transport is one whose socket a frame may be sent on directly (see :func:`_idle_plain_tcp`).
        self._socket_writes = all(hasattr(self._transport, name) for name in _TCP_INTERNALS)

    # --- FlowControl

    @property
    def direct_writes(self) -> bool:  # type: ignore[override]
        """Whole frames go straight to Twisted's transport, unless compression was negotiated (autobahn's internals)."""
        protocol = self._protocol
        return (
            getattr(protocol, "_perMessageCompress", True) is None
            and hasattr(protocol, "send_queue")
            and hasattr(protocol, "STATE_OPEN")
        )

    def write_frame(self, frame: bytes) -> bool:
        """Write ``frame`` to the TCP transport if the socket is open, Twisted has room and autobahn queues nothing."""
        protocol = self._protocol
        if self._write_paused or protocol.state != protocol.STATE_OPEN or protocol.send_queue:
            return False
        transport = self._transport
        try:
            if self._socket_writes and _idle_plain_tcp(transport):
                frame = _send_some(transport.socket, frame)
                if not frame:
                    return True
            transport.write(frame)  # the rest (or all of it) through Twisted's buffer, in order
        except Exception:  # the ASGI path reports it
            logger.debug("signalr_groups: a direct write failed", exc_info=True)
            return False
        return True

    def _pause(self, reason: str) -> None:
        if self._lingering:
            return  # closing: nothing may stop the client's close from being read (see linger)
        if not self._paused_for:
            self._transport.pauseProducing()
        self._paused_for.add(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._paused_for:
            self._paused_for.discard(reason)
            if not self._paused_for:
                self._transport.resumeProducing()

    def before_receive(self) -> None:
        """Read again before waiting on a queue that has drained (or the wait would never end)."""
        if "queue" in self._paused_for and self._queue.qsize() <= QUEUE_LOW:
            self._resume("queue")

    def after_receive(self) -> None:
        """Stop reading while daphne's queue is long."""
        if self._queue.qsize() > QUEUE_HIGH:
            self._pause("queue")

    def pause_reading(self, reason: str = "invocations") -> None:
        """Stop reading while the connection waits for its invocations, registers, or closes."""
        self._pause(reason)

    def resume_reading(self, reason: str = "invocations") -> None:
        """That reason is over: read again (unless another one still holds)."""
        self._resume(reason)

    def _resume_all(self) -> None:
        if self._paused_for:
            self._paused_for.clear()
            try:
                self._transport.resumeProducing()
            except Exception:
                logger.debug("signalr_groups: resuming a daphne transport failed", exc_info=True)

    async def linger(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
        """Read again (the client's close must get through), then wait for it as :class:`FlowControl` does."""
        self._lingering = True
        self._resume_all()
        return await super().linger(receive)

    def drop(self) -> None:
        """Abort the TCP connection (Twisted discards its buffer)."""
        try:
            self._protocol.dropConnection(abort=True)
        except Exception:
            logger.debug("signalr_groups: dropping a daphne connection failed", exc_info=True)

    def close(self) -> None:
        """Unregister from the transport and let Twisted read again."""
        if self._registered:
            self._registered = False
            try:
                self._transport.unregisterProducer()  # (under TLS the transport's producer is a wrapper of us)
            except Exception:
                logger.debug("signalr_groups: unregistering from a daphne transport failed", exc_info=True)
        self._resume_all()
        self._wake()


class DaphneHttpFlowControl(_TwistedWriteProducer):
    """Write backpressure for a long-lived HTTP response under daphne (a Server-Sent Events stream).

    The connection registers as the streaming producer of daphne's request (Twisted's public
    ``Request.registerProducer``): Twisted's HTTP channel pauses it when the TCP write buffer
    fills and resumes it when the buffer drains, and the outbox waits for that before it writes
    the next event — so a client that stops reading fills the outbox, whose bound closes it,
    instead of growing Twisted's buffer without limit.
    """

    def __init__(self, request: Any) -> None:
        self._request = request
        request.registerProducer(self, True)
        self._registered = True

    def drop(self) -> None:
        """Abort the TCP connection (Twisted discards its buffer)."""
        try:
            self._request.channel.transport.abortConnection()
        except Exception:
            logger.debug("signalr_groups: dropping a daphne HTTP connection failed", exc_info=True)

    def close(self) -> None:
        """Unregister from the request."""
        if self._registered:
            self._registered = False
            try:
                self._request.unregisterProducer()
            except Exception:
                logger.debug("signalr_groups: unregistering from a daphne request failed", exc_info=True)
        self._wake()


#: How many middleware ``send`` wrappers we look through.
_MAX_WRAPPERS: Final = 8


def unwrap_send(send: Any) -> Any:
    """The server's own ``send`` under middleware wrappers (Channels' session middleware keeps it as ``real_send``)."""
    for _ in range(_MAX_WRAPPERS):
        if isinstance(send, functools.partial):
            return send
        inner = getattr(getattr(send, "__self__", None), "real_send", None) or getattr(send, "__wrapped__", None)
        if inner is None:
            return send
        send = inner
    return send


def _daphne_protocol(send: Callable[..., Awaitable[None]], module: str = "daphne.ws_protocol") -> Any | None:
    """daphne's protocol object (``WebSocketProtocol``, or ``WebRequest`` for HTTP) behind a ``send`` callable."""
    send = unwrap_send(send)
    if not isinstance(send, functools.partial) or not send.args:
        return None
    if getattr(send.func, "__qualname__", "") != "Server.handle_reply":
        return None
    protocol = send.args[0]
    if getattr(type(protocol), "__module__", "") != module:
        return None
    return protocol


def _daphne_queue(receive: Callable[..., Awaitable[Any]]) -> asyncio.Queue[Any] | None:
    """daphne's application queue behind a ``receive`` callable (its bound ``get``)."""
    owner = getattr(receive, "__self__", None)
    return owner if isinstance(owner, asyncio.Queue) else None


def missing_daphne_internals() -> list[str]:
    """What of daphne's internals this module reads is missing from the installed daphne (empty: all there)."""
    try:
        from daphne.server import Server  # daphne is a dependency, imported only where it is checked
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return ["daphne"]
    missing = []
    if Server.handle_reply.__qualname__ != "Server.handle_reply":
        missing.append("daphne.server.Server.handle_reply")
    for name in ("dropConnection",):
        if not hasattr(WebSocketProtocol, name):
            missing.append(f"daphne.ws_protocol.WebSocketProtocol.{name}")
    return missing


def http_flow_control_for(send: Callable[..., Awaitable[None]]) -> FlowControl:
    """The flow control a long-lived HTTP response (Server-Sent Events) needs under the server that called it."""
    request = _daphne_protocol(send, "daphne.http_protocol")
    if request is None or not hasattr(request, "registerProducer"):
        return FlowControl()
    try:
        return DaphneHttpFlowControl(request)
    except Exception:
        logger.warning("signalr_groups: no flow control for a daphne event stream", exc_info=True)
        return FlowControl()


def flow_control_for(receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[None]]) -> FlowControl:
    """The flow control a connection needs under the server that called it."""
    protocol = _daphne_protocol(send)
    queue = _daphne_queue(receive)
    if protocol is None or queue is None or getattr(protocol, "transport", None) is None:
        return FlowControl()
    try:
        return DaphneFlowControl(protocol, queue)
    except Exception:
        logger.warning("signalr_groups: no flow control for a daphne connection", exc_info=True)
        return FlowControl()
