"""The demo's rooms and their persisted messages."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

#: Longest chat message, in characters (checked by the hub and by the form's ``maxlength``).
MAX_MESSAGE_LENGTH = 2000
#: How many past messages a room page shows, and how many a reconnecting page may catch up.
HISTORY_LENGTH = 50


class Room(models.Model):
    """A chat room: a hub group named by ``slug``. Whether it needs a grant is ``ChatHub``'s call."""

    slug = models.SlugField(max_length=64, unique=True, help_text="The hub group name of the room.")
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name

    @property
    def restricted(self) -> bool:
        """Whether joining needs a grant (``ChatHub.restricted_groups``)."""
        from hubproject.chat.hubs import ChatHub

        return ChatHub.is_restricted(self.slug)


class Message(models.Model):
    """A message posted to a room (kept so that a room page can show the last ones)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    #: The author's user identifier when posted (still shown if the account is deleted).
    author_name = models.CharField(max_length=150)
    text = models.TextField(max_length=MAX_MESSAGE_LENGTH)
    sent_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.author_name} in {self.room_id}: {self.text[:40]}"

    def as_event(self) -> dict[str, Any]:
        """The JSON shape sent to browsers in ``RoomMessage`` and ``JoinRoom``'s catch-up."""
        return {
            "id": self.pk,
            "author": self.author_name,
            "text": self.text,
            "sentAt": self.sent_at.isoformat(),
        }


def recent_messages(room: Room | str, after_id: int | None = None) -> list[Message]:
    """The last ``HISTORY_LENGTH`` messages of a room (only those after ``after_id``, if given), oldest first."""
    query = Message.objects.filter(room__slug=room) if isinstance(room, str) else room.messages.all()
    if after_id is not None:
        query = query.filter(id__gt=after_id)
    return list(reversed(query.order_by("-id")[:HISTORY_LENGTH]))
