"""The demo hub, with the same methods and client events as the ASP.NET Core docs' groups sample."""

from __future__ import annotations

from signalr_groups import Hub, hub_method


class ChatHub(Hub):
    """Chat rooms (groups) and private messages (users) at ``/chatHub``.

    Client events: ``Send`` (one string: group messages and join/leave notices),
    ``ReceiveMessage`` (one string: a private message) and ``GroupAccessRevoked`` (room, reason)
    when a grant for a restricted room is revoked or expires.
    """

    hub_name = "chat"
    #: Rooms that need a grant (Django admin → Group access grants); every other room is open.
    restricted_groups = ("vip-*", "staff-room")

    def _who(self) -> str:
        return self.context.user_identifier or f"anonymous-{self.context.connection_id[:6]}"

    @hub_method
    async def add_to_group(self, group_name: str) -> None:
        """Join a room and tell its members."""
        await self.groups.add_to_group(self.context.connection_id, group_name)
        await self.clients.group(group_name).send("Send", f"{self._who()} has joined the group {group_name}.")

    @hub_method
    async def remove_from_group(self, group_name: str) -> None:
        """Leave a room and tell its members."""
        await self.groups.remove_from_group(self.context.connection_id, group_name)
        await self.clients.group(group_name).send("Send", f"{self._who()} has left the group {group_name}.")

    @hub_method
    async def send_message_to_group(self, group_name: str, message: str) -> None:
        """Send a message to everyone in a room."""
        await self.clients.group(group_name).send("Send", f"{self._who()}: {message}")

    @hub_method
    async def send_private_message(self, user: str, message: str) -> None:
        """Send a message to every connection (every device) of a user, by username."""
        await self.clients.user(user).send("ReceiveMessage", f"{self._who()}: {message}")
