"""The two Django-side servers under test, with the same methods and payloads.

``BenchHub`` is our hub. ``ChannelsBaseline`` is what a Django developer writes today: an
``AsyncWebsocketConsumer`` that speaks the same SignalR JSON records by hand and fans out with
``channel_layer.group_send`` (one group per SignalR group, one per user, ``all`` for broadcasts).
Both answer: ``Echo(x)`` (completion), ``Broadcast(p)``, ``SendToGroup(g, p)``, ``SendToUser(u, p)``
(each delivers ``Receive(p)``), ``JoinGroup(g, stamp)`` and ``LeaveGroup(g, stamp)`` (completion
carrying ``stamp``, so the client can time the operation).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer

from signalr_groups import Hub, hub_method

RS = "\x1e"


def _query(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode()).get(name)
    return values[0] if values else None


def query_user_id(user: Any, scope: dict[str, Any]) -> str | None:
    """USER_ID_PROVIDER for the bench: the ``user`` query parameter (no database, no auth)."""
    return _query(scope, "user")


class BenchHub(Hub):
    """Our hub, at ``/hub``."""

    hub_name = "bench"

    @hub_method
    async def echo(self, value: Any) -> Any:
        """Return the value (RPC round trip)."""
        return value

    @hub_method
    async def broadcast(self, payload: str) -> None:
        """``Receive(payload)`` to every connection."""
        await self.clients.all.send("Receive", payload)

    @hub_method
    async def send_to_group(self, group: str, payload: str) -> None:
        """``Receive(payload)`` to a group."""
        await self.clients.group(group).send("Receive", payload)

    @hub_method
    async def send_to_user(self, user: str, payload: str) -> None:
        """``Receive(payload)`` to every connection of a user."""
        await self.clients.user(user).send("Receive", payload)

    @hub_method
    async def join_group(self, group: str, stamp: str) -> str:
        """Join a group; return the stamp."""
        await self.groups.add_to_group(self.context.connection_id, group)
        return stamp

    @hub_method
    async def leave_group(self, group: str, stamp: str) -> str:
        """Leave a group; return the stamp."""
        await self.groups.remove_from_group(self.context.connection_id, group)
        return stamp


class ChannelsBaseline(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    """The plain Channels consumer, at ``/channels``."""

    handshaken = False
    user: str | None = None

    async def connect(self) -> None:
        """Accept, and join the user's group (and ``all`` when the client asks with ``all=1``)."""
        self.groups_joined: set[str] = set()
        await self.accept()
        self.user = _query(self.scope, "user")
        if self.user:
            await self._join(f"user.{self.user}")
        if _query(self.scope, "all") == "1":
            await self._join("all")

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.add(group)

    async def _leave(self, group: str) -> None:
        await self.channel_layer.group_discard(group, self.channel_name)
        self.groups_joined.discard(group)

    async def disconnect(self, code: int) -> None:
        """Leave every group joined."""
        for group in list(getattr(self, "groups_joined", ())):
            await self._leave(group)

    async def _fan_out(self, group: str, payload: str) -> None:
        text = json.dumps({"type": 1, "target": "Receive", "arguments": [payload]}) + RS
        await self.channel_layer.group_send(group, {"type": "relay", "text": text})

    async def relay(self, event: dict[str, Any]) -> None:
        """A group message: write it to the socket."""
        await self.send(text_data=event["text"])

    async def _complete(self, message: dict[str, Any], result: Any) -> None:
        if "invocationId" in message:
            await self.send(
                text_data=json.dumps({"type": 3, "invocationId": message["invocationId"], "result": result}) + RS
            )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle the handshake, then invocation records."""
        if not self.handshaken:
            self.handshaken = True
            await self.send(text_data="{}" + RS)
            return
        for record in (text_data or "").split(RS):
            if not record:
                continue
            message = json.loads(record)
            if message.get("type") != 1:
                continue
            target, args = message["target"], message["arguments"]
            if target == "Echo":
                await self._complete(message, args[0])
            elif target == "Broadcast":
                await self._fan_out("all", args[0])
            elif target == "SendToGroup":
                await self._fan_out(f"g.{args[0]}", args[1])
            elif target == "SendToUser":
                await self._fan_out(f"user.{args[0]}", args[1])
            elif target == "JoinGroup":
                await self._join(f"g.{args[0]}")
                await self._complete(message, args[1])
            elif target == "LeaveGroup":
                await self._leave(f"g.{args[0]}")
                await self._complete(message, args[1])
