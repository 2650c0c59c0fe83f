"""Demo admin: rooms and messages, and a User admin with "Disconnect all of their SignalR connections"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from hubproject.chat.models import Message, Room
from signalr_groups.admin import DisconnectUserAdminMixin

User = get_user_model()

if TYPE_CHECKING:
    RoomAdminBase = admin.ModelAdmin[Room]
    MessageAdminBase = admin.ModelAdmin[Message]
else:  # ModelAdmin is not subscriptable at run time
    RoomAdminBase = MessageAdminBase = admin.ModelAdmin


class DemoUserAdmin(DisconnectUserAdminMixin, UserAdmin):  # type: ignore[misc,type-arg]
    """Django's UserAdmin plus the disconnect-everywhere action."""


@admin.register(Room)
class RoomAdmin(RoomAdminBase):
    """Rooms; whether one is restricted comes from ``ChatHub.restricted_groups``."""

    list_display = ("name", "slug", "restricted", "description")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}

    @admin.display(boolean=True, description="restricted")
    def restricted(self, room: Room) -> bool:
        """Whether joining the room needs a grant."""
        return room.restricted


@admin.register(Message)
class MessageAdmin(MessageAdminBase):
    """Posted messages (for moderation)."""

    list_display = ("sent_at", "room", "author_name", "text")
    list_filter = ("room",)
    search_fields = ("author_name", "text")
    date_hierarchy = "sent_at"


admin.site.unregister(User)
admin.site.register(User, DemoUserAdmin)
