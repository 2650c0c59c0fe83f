"""Frames written straight to uvicorn's socket: the fast path of the outbox.

Through ASGI, each record a connection sends costs a ``websocket.send`` dict, three coroutines
(ours, uvicorn's ``send``, its ``Event.wait``), and WebSocket framing per connection; and the
outbox's writer task is woken once per record. For a group send that is paid once per member.
Under uvicorn's ``websockets-sansio`` protocol (its default WebSocket implementation when the
``websockets`` package is installed, and the one the deployment guide uses), a record bound for
a socket that has room and nothing queued before it is instead framed once per send (the frame
is shared by every member, see :class:`~signalr_groups.protocol.serialized.SerializedInvocation`)
and written to the socket's transport at once, from the sender's call.

It reads four of uvicorn's attributes (``transport``, ``writable``, ``close_sent``,
``disconnected``) and the ``websockets`` protocol's ``state`` and ``extensions``;
:func:`uvicorn_flow_control` checks that they are there and falls back to the ASGI path (the
queue and its writer task) otherwise, so a uvicorn release that changes them costs speed, never
correctness. A socket that negotiated an extension (permessage-deflate: uvicorn's default unless
``--ws-per-message-deflate false``) always takes the ASGI path, since its frames are compressed.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Final

from signalr_groups.protocol.serialized import SerializedInvocation
from signalr_groups.server.flow import FlowControl, unwrap_send

logger = logging.getLogger(__name__)

_SansIOProtocol: type[Any] | None
try:  # uvicorn is optional: the app runs under daphne too
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol as _SansIOProtocol
except ImportError:  # pragma: no cover - depends on what is installed
    _SansIOProtocol = None

#: What this module reads of uvicorn's protocol object (see the module docstring).
PROTOCOL_ATTRIBUTES: Final = ("transport", "writable", "close_sent", "disconnected", "conn")

_TEXT: Final = 0x81  # FIN + text opcode
_BINARY: Final = 0x82  # FIN + binary opcode
_HEAD_16: Final = struct.Struct("!BBH")
_HEAD_64: Final = struct.Struct("!BBQ")


def websocket_frame(first_byte: int, data: bytes) -> bytes:
    """One unfragmented, unmasked WebSocket frame (a server's) carrying ``data``."""
    size = len(data)
    if size < 126:
        return bytes((first_byte, size)) + data
    if size < 65536:
        return _HEAD_16.pack(first_byte, 126, size) + data
    return _HEAD_64.pack(first_byte, 127, size) + data


def frame_of(record: str | bytes) -> bytes:
    """The WebSocket frame of one record: text for a str (JSON), binary for bytes (MessagePack)."""
    if isinstance(record, str):
        return websocket_frame(_TEXT, record.encode())
    return websocket_frame(_BINARY, record)


def shared_frame_of(record: str | bytes, shared: SerializedInvocation) -> bytes:
    """The frame of ``record``, a form of ``shared``: built by its first recipient, reused by the others."""
    if isinstance(record, str):
        frame = shared.text_frame
        if frame is None:
            frame = shared.text_frame = websocket_frame(_TEXT, record.encode())
        return frame
    frame = shared.binary_frame
    if frame is None:
        frame = shared.binary_frame = websocket_frame(_BINARY, record)
    return frame


class UvicornFlowControl(FlowControl):
    """uvicorn applies backpressure itself; this adds the direct write of whole frames to its socket."""

    direct_writes = True

    def __init__(self, protocol: Any, open_state: Any) -> None:
        self._protocol = protocol
        self._open = open_state

    def write_frame(self, frame: bytes) -> bool:
        """Write ``frame`` now if the socket is open, has room, and no close was sent; False otherwise."""
        protocol = self._protocol
        if (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()  # uvicorn's send() would wait: let the writer task do so
            or protocol.conn.state is not self._open
        ):
            return False
        try:
            protocol.transport.write(frame)
        except Exception:  # a transport that failed: the ASGI path reports it
            logger.debug("signalr_groups: a direct write failed", exc_info=True)
            return False
        return True

    def drop(self) -> None:
        """Abort the TCP connection, discarding what uvicorn buffered for a client that does not read."""
        try:
            self._protocol.transport.abort()
        except Exception:
            logger.debug("signalr_groups: dropping a uvicorn connection failed", exc_info=True)


def uvicorn_flow_control(send: Callable[..., Awaitable[None]]) -> UvicornFlowControl | None:
    """The direct-write flow control if ``send`` is uvicorn's websockets-sansio ``send`` (once accepted), else None."""
    if _SansIOProtocol is None:
        return None
    protocol = getattr(unwrap_send(send), "__self__", None)
    if not isinstance(protocol, _SansIOProtocol):
        return None
    if not all(hasattr(protocol, name) for name in PROTOCOL_ATTRIBUTES):
        logger.warning("signalr_groups: this uvicorn release lacks %s; direct writes are off", PROTOCOL_ATTRIBUTES)
        return None
    conn = protocol.conn
    state = getattr(conn, "state", None)
    open_state = getattr(type(state), "OPEN", None)
    if open_state is None or state is not open_state or getattr(conn, "extensions", None):
        return None  # not open yet, or compressed frames (permessage-deflate)
    return UvicornFlowControl(protocol, open_state)
