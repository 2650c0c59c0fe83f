"""The demo hub: chat rooms (groups), private messages (users) and live revocation.

It keeps the ASP.NET Core docs' groups sample methods (``AddToGroup``, ``SendMessageToGroup``,
``SendPrivateMessage``…) unchanged, and adds what the chat site uses: rooms stored in the
database with their history, presence (who is in a room, counted per person, not per tab) and
private messages to every device of a user.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from signalr_groups import Hub, HubError, hub_method
from signalr_groups.hubs.filters import RateLimitFilter
from signalr_groups.permissions import IsAuthenticated

logger = logging.getLogger(__name__)


#: The docs sample's groups are kept apart from the chat rooms (see ChatHub.add_to_group).
SAMPLE_GROUP_PREFIX = "sample:"


def _room_exists(slug: str) -> bool:
    from hubproject.chat.models import Room

    return Room.objects.filter(slug=slug).exists()


def _catch_up(slug: str, after_id: int | None) -> tuple[list[dict[str, Any]], bool]:
    from hubproject.chat.models import HISTORY_LENGTH, Message, recent_messages

    messages = recent_messages(slug, after_id)
    gap = len(messages) == HISTORY_LENGTH and (
        Message.objects.filter(room__slug=slug, id__gt=after_id or 0, id__lt=messages[0].pk).exists()
    )
    return [message.as_event() for message in messages], gap


def _save_message(slug: str, user: Any, author: str, text: str) -> dict[str, Any]:
    from hubproject.chat.models import Message, Room

    room = Room.objects.filter(slug=slug).first()
    if room is None:
        raise HubError(f"There is no room called '{slug}'.")
    return Message.objects.create(room=room, author=user, author_name=author, text=text).as_event()


def _user_exists(username: str) -> bool:
    user_model = get_user_model()
    return user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).exists()


def _clean_text(text: str) -> str:
    from hubproject.chat.models import MAX_MESSAGE_LENGTH

    text = text.strip()
    if not text:
        raise HubError("The message is empty.")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise HubError(f"A message can be at most {MAX_MESSAGE_LENGTH} characters long.")
    return text


class ChatHub(Hub):
    """Chat rooms and private messages at ``/chatHub``.

    Client events of the chat site:

    - ``RoomMessage(room, {id, author, text, sentAt})``: a message posted to a room;
    - ``Presence(room, [user, …], at)``: who is in the room now (one entry per person, however
      many tabs or devices), sent to the room whenever someone joins or leaves; ``at`` is the
      server time of the count, so that a page keeps the newest of two crossing snapshots;
    - ``PrivateMessage({from, text, sentAt})``: a private message, on every device of the user;
    - ``GroupAccessRevoked(room, reason)``: access to a restricted room was revoked or expired,
      and this connection has left it.

    The docs sample's events are ``Send`` (one string) and ``ReceiveMessage`` (one string).
    """

    hub_name = "chat"
    #: Rooms that need a grant (Django admin → Group access grants); every other room is open.
    restricted_groups = ("vip-*", "staff-room")
    #: Posting is rate-limited per user, across all of their tabs and devices: 10 messages a second
    #: on average, bursts of 10 (over that, the post fails with "Too many calls" and is not stored).
    filters = (RateLimitFilter(rate=10, methods=["SendToRoom", "SendPrivate"]),)

    def _who(self) -> str:
        return self.context.user_identifier or f"anonymous-{self.context.connection_id[:6]}"

    # ------------------------------------------------------------------ the chat site

    async def _publish_presence(self, room: str) -> None:
        """Tell a room who is in it now. Best effort: a failure is logged, never the caller's problem."""
        try:
            members = await self.groups.get_members(room)
            # "at" orders snapshots computed on different processes: pages keep the newest.
            await self.clients.group(room).send("Presence", room, sorted(members.users), time.time())
        except Exception:
            logger.exception("chat: could not publish the presence of room %r", room)

    @hub_method(permission_classes=[IsAuthenticated])
    async def join_room(self, room: str, after_id: int | None = None) -> dict[str, Any]:
        """Join a room; return the messages posted after ``after_id`` (what a reconnecting page missed).

        ``gap`` is True when more than ``HISTORY_LENGTH`` messages were missed: only the last ones
        are returned, and the page says so.
        """
        if not await database_sync_to_async(_room_exists)(room):
            raise HubError(f"There is no room called '{room}'.")
        # Restricted rooms: add_to_group checks the caller's grants and refuses without one.
        await self.groups.add_to_group(self.context.connection_id, room)
        self.context.items.setdefault("rooms", set()).add(room)
        # Read the catch-up after joining: a message posted meanwhile comes both ways, and the
        # page shows each id once.
        missed, gap = await database_sync_to_async(_catch_up)(room, after_id) if after_id is not None else ([], False)
        await self._publish_presence(room)
        return {"missed": missed, "gap": gap}

    @hub_method(permission_classes=[IsAuthenticated])
    async def leave_room(self, room: str) -> None:
        """Leave a room (also called by a page whose access was revoked, to update the others' presence)."""
        was_in = room in self.context.items.get("rooms", ())
        await self.groups.remove_from_group(self.context.connection_id, room)
        self.context.items.setdefault("rooms", set()).discard(room)
        if was_in:
            await self._publish_presence(room)

    @hub_method(permission_classes=[IsAuthenticated])
    async def send_to_room(self, room: str, text: str) -> None:
        """Post a message to a room the caller is in; it is stored, then sent to every member."""
        if room not in self.context.group_names:  # live: a revoked membership is already gone
            raise HubError(f"You are not in the room '{room}'.")
        text = _clean_text(text)
        event = await database_sync_to_async(_save_message)(room, self.context.user, self._who(), text)
        await self.clients.group(room).send("RoomMessage", room, event)

    @hub_method(permission_classes=[IsAuthenticated])
    async def send_private(self, to_user: str, text: str) -> None:
        """Send a private message to every connected device of a user (by username)."""
        text = _clean_text(text)
        if not await database_sync_to_async(_user_exists)(to_user):
            raise HubError(f"There is no user called '{to_user}'.")
        message = {"from": self._who(), "text": text, "sentAt": timezone.now().isoformat()}
        await self.clients.user(to_user).send("PrivateMessage", message)

    async def on_group_access_revoked(self, group: str, reason: str) -> None:
        """A revoked member has left the room: the others' presence lists show it at once."""
        self.context.items.setdefault("rooms", set()).discard(group)
        await self._publish_presence(group)

    async def on_disconnected(self, exception: BaseException | None) -> None:
        """Leave the rooms this connection was in and tell their members who is left."""
        for room in sorted(self.context.items.get("rooms", ())):
            await self.groups.remove_from_group(self.context.connection_id, room)
            await self._publish_presence(room)

    # ------------------------------------------------------------------ the ASP.NET Core docs sample
    #
    # The sample's groups live in their own namespace ("sample:<name>"): whatever name a sample
    # client gives, it never reaches a chat room, whose members must be logged in (and hold a
    # grant for a restricted room). Private messages need a login too.

    @staticmethod
    def _sample_group(group_name: str) -> str:
        return f"{SAMPLE_GROUP_PREFIX}{group_name}"

    @hub_method
    async def add_to_group(self, group_name: str) -> None:
        """Join a sample group and tell its members."""
        group = self._sample_group(group_name)
        await self.groups.add_to_group(self.context.connection_id, group)
        await self.clients.group(group).send("Send", f"{self._who()} has joined the group {group_name}.")

    @hub_method
    async def remove_from_group(self, group_name: str) -> None:
        """Leave a sample group and tell its members."""
        group = self._sample_group(group_name)
        await self.groups.remove_from_group(self.context.connection_id, group)
        await self.clients.group(group).send("Send", f"{self._who()} has left the group {group_name}.")

    @hub_method
    async def send_message_to_group(self, group_name: str, message: str) -> None:
        """Send a message to everyone in a sample group (as in the docs, members or not)."""
        await self.clients.group(self._sample_group(group_name)).send("Send", f"{self._who()}: {message}")

    @hub_method(permission_classes=[IsAuthenticated])
    async def send_private_message(self, user: str, message: str) -> None:
        """Send a message to every connection (every device) of a user, by username."""
        await self.clients.user(user).send("ReceiveMessage", f"{self._who()}: {message}")
