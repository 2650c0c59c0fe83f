"""Stateful reconnect across processes: the client's new socket reaches a process that does not own its connection.

With no sticky sessions, a stateful-reconnect client's new WebSocket may land on any process.
That process asks the hub's processes for the connection (``SOCKET_RESUME``); the owner checks it
(the same user, the connection still waiting for its client) and resumes it on a *bridged*
socket: each frame the client sends goes to the owner and is answered once the connection has
queued it (so a client cannot flood the layer), and the owner's frames come back on a channel of
the bridging process, bounded by the replay buffer (the owner writes at most
``STATEFUL_RECONNECT_BUFFER_SIZE`` bytes the client has not acknowledged).

The connection does not move: its groups, items, running calls and buffers stay with their
owner, so nothing is lost or duplicated; what is in flight when either socket drops is covered
by the replay buffer, as on one process. If no process takes the connection (it ended, its
window passed, its owner is gone), the client gets 404 and falls back to a normal reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from signalr_groups.addressing import Address
from signalr_groups.backplane.layer import release_channel
from signalr_groups.backplane.messages import (
    REPLY,
    SOCKET_CLOSE,
    SOCKET_DATA,
    SOCKET_FRAME,
    SOCKET_GONE,
    SOCKET_RESUME,
)
from signalr_groups.backplane.rpc import ReplyInbox, answer, ask_owner, ask_owner_with_ack
from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.lifetime.managers import layer_to_ask
from signalr_groups.server.connection import HubConnection
from signalr_groups.server.flow import FlowControl
from signalr_groups.server.http_transports import Inbound

logger = logging.getLogger(__name__)

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]


class BridgedSocket:
    """The owner's end of a client socket held by another process: the connection's ``receive`` and ``send``."""

    __slots__ = ("channel", "closed", "inbound", "layer")

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        #: The bridging process's channel for this socket.
        self.channel = channel
        #: What the client sent, queued for the connection (bounded: see :class:`Inbound`).
        self.inbound = Inbound()
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        """The connection's ASGI ``send``: a frame or the close, to the bridging process."""
        if self.closed:
            raise ConnectionError("the bridged socket is closed")
        kind = message["type"]
        if kind == "websocket.send":
            frame: dict[str, Any] = {"type": SOCKET_FRAME}
            if message.get("text") is not None:
                frame["text"] = message["text"]
            else:
                frame["bytes"] = bytes(message.get("bytes") or b"")
            await self.layer.send(self.channel, frame)
        elif kind == "websocket.close":
            self.closed = True
            self.inbound.disconnect(1000)
            await self.layer.send(self.channel, {"type": SOCKET_CLOSE})


class SocketBridges(ManagerExtension):
    """The owner's side: connections of this process resumed on sockets that other processes hold."""

    def __init__(self, manager: Any) -> None:
        super().__init__(manager)
        self._sockets: dict[str, BridgedSocket] = {}

    def __len__(self) -> int:
        return len(self._sockets)

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """The bridging processes' requests."""
        return {SOCKET_RESUME: self._resume, SOCKET_DATA: self._data, SOCKET_GONE: self._gone}

    async def _resume(self, message: dict[str, Any]) -> dict[str, Any] | None:
        connection = self.manager.connections.get(str(message.get("connection_id")))
        if connection is None:
            return None  # not ours: the owner answers
        if (
            not isinstance(connection, HubConnection)
            or not connection.resumable
            or connection.user_identifier != message.get("user_identifier")
        ):
            return {"accepted": False}
        socket = BridgedSocket(self.manager.layer, str(message.get("bridge")))
        self._sockets[socket.channel] = socket
        self.manager.spawn(self._serve(connection, socket))
        return {"accepted": True}

    async def _serve(self, connection: HubConnection, socket: BridgedSocket) -> None:
        try:
            await connection.resume(socket.inbound.receive, socket.send, FlowControl())
        except Exception:
            logger.exception("signalr_groups: serving %s on a bridged socket failed", connection.connection_id)
        finally:
            self._sockets.pop(socket.channel, None)
            if not socket.closed:
                socket.closed = True
                with contextlib.suppress(Exception):
                    await self.manager.layer.send(socket.channel, {"type": SOCKET_CLOSE})

    async def _data(self, message: dict[str, Any]) -> dict[str, Any] | None:
        socket = self._sockets.get(str(message.get("bridge")))
        if socket is None:
            return {"accepted": False}
        text = message.get("text")
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(message.get("bytes") or b"")

        async def queue() -> None:
            # Answered once the connection has room for it: the bridging process sends the next
            # frame only then (the layer's receive loop must not wait meanwhile).
            queued = await socket.inbound.put(data)
            await answer(self.manager.layer, message, self.manager.channel_name, body={"queued": queued})

        await answer(self.manager.layer, message, self.manager.channel_name, body={"accepted": True})
        self.manager.spawn(queue())
        return None

    async def _gone(self, message: dict[str, Any]) -> dict[str, Any] | None:
        socket = self._sockets.get(str(message.get("bridge")))
        if socket is not None:
            code = message.get("code")
            socket.inbound.disconnect(code if isinstance(code, int) else 1006)
        return None


async def bridge_socket(
    hub_key: str, connection_id: str, user_identifier: str | None, receive: ASGIReceive, send: ASGISend
) -> bool:
    """Serve a client's socket for its connection on another process; False (nothing sent) if no process takes it."""
    group = Address("all").layer_group(hub_key)
    _manager, layer = layer_to_ask(hub_key, group)
    if layer is None:
        return False
    settings = get_hub_settings()
    channel = await layer.new_channel()
    inbox = ReplyInbox()
    inbox.channel = channel
    frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        while True:
            message = await layer.receive(channel)
            if message.get("type") == REPLY:
                inbox.deliver(message)
            else:
                frames.put_nowait(message)

    reader = asyncio.ensure_future(read())
    try:
        request = {
            "type": SOCKET_RESUME,
            "connection_id": connection_id,
            "user_identifier": user_identifier,
            "bridge": channel,
        }
        reply = await ask_owner(layer, group, request, settings.group_action_timeout, inbox)
        if reply is None or reply.body.get("accepted") is not True:
            return False
        await send({"type": "websocket.accept"})
        logger.info("signalr_groups: bridging %s to the process that owns it", connection_id)
        down = asyncio.ensure_future(_to_client(frames, send))
        up = asyncio.ensure_future(_to_owner(layer, group, reply.channel, channel, connection_id, receive, inbox))
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (down, up):
                task.cancel()
            for task in (down, up):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        owner_closed = down.done() and not down.cancelled() and down.exception() is None
        if not owner_closed:  # the client left, or the owner stopped taking its data
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1000})
        return True
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        await release_channel(layer, channel)


async def _to_client(frames: asyncio.Queue[dict[str, Any]], send: ASGISend) -> bool:
    """Write the owner's frames to the client's socket until the owner closes it (True)."""
    while True:
        message = await frames.get()
        kind = message.get("type")
        if kind == SOCKET_FRAME:
            text = message.get("text")
            if isinstance(text, str):
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": bytes(message.get("bytes") or b"")})
        elif kind == SOCKET_CLOSE:
            await send({"type": "websocket.close", "code": 1000})
            return True


async def _to_owner(
    layer: Any,
    group: str,
    owner: str,
    channel: str,
    connection_id: str,
    receive: ASGIReceive,
    inbox: ReplyInbox,
) -> None:
    """Relay the client's frames to the owner, one at a time, until the client leaves or the owner stops taking them."""
    settings = get_hub_settings()
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            with contextlib.suppress(Exception):
                await layer.send(
                    owner,
                    {
                        "type": SOCKET_GONE,
                        "connection_id": connection_id,
                        "bridge": channel,
                        "code": message.get("code", 1005),
                    },
                )
            return
        data: dict[str, Any] = {"type": SOCKET_DATA, "connection_id": connection_id, "bridge": channel}
        text = message.get("text")
        if text is not None:
            data["text"] = text
        else:
            data["bytes"] = bytes(message.get("bytes") or b"")
        reply = await ask_owner_with_ack(
            layer,
            group,
            data,
            settings.group_action_timeout,
            max(settings.client_timeout, settings.group_action_timeout),
            inbox,
            channel=owner,
        )
        if reply is None or reply.body.get("queued") is not True:
            logger.info("signalr_groups: the owner of %s stopped taking its bridged socket's data", connection_id)
            return
