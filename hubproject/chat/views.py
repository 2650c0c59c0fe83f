"""Views of the demo chat site: the room list and a room page."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from hubproject.chat.hubs import ChatHub
from hubproject.chat.models import MAX_MESSAGE_LENGTH, Room, recent_messages
from signalr_groups import get_hub_context
from signalr_groups.grants import GrantList, access_until, active_grants


@dataclass(frozen=True)
class RoomEntry:
    """A room as the room list shows it."""

    room: Room
    restricted: bool
    has_access: bool
    people: int


def _has_access(room: Room, grants: GrantList) -> bool:
    return not room.restricted or access_until(grants, room.slug)[0]


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """The room list: open and restricted rooms, whether you may enter, and how many people are in each."""
    groups = get_hub_context(ChatHub).sync.groups
    grants = active_grants(request.user, ChatHub.hub_key())
    entries = [
        RoomEntry(room, room.restricted, _has_access(room, grants), groups.get_members(room.slug).user_count)
        for room in Room.objects.all()
    ]
    entries.sort(key=lambda entry: (entry.restricted, entry.room.name.casefold()))
    return render(request, "chat/index.html", {"entries": entries})


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    """A room: its last messages, then live messages, presence and private messages over SignalR."""
    room = get_object_or_404(Room, slug=slug)
    if not _has_access(room, active_grants(request.user, ChatHub.hub_key())):
        return render(request, "chat/no_access.html", {"room": room}, status=403)
    user_model = get_user_model()
    others = (
        user_model._default_manager.filter(is_active=True)
        .exclude(**{user_model.USERNAME_FIELD: request.user.get_username()})
        .order_by(user_model.USERNAME_FIELD)
        .values_list(user_model.USERNAME_FIELD, flat=True)
    )
    history = recent_messages(room)
    context = {
        "room": room,
        "history": history,
        "last_id": history[-1].pk if history else 0,
        "max_length": MAX_MESSAGE_LENGTH,
        "people": list(others),
    }
    return render(request, "chat/room.html", context)


def docs_sample(request: HttpRequest) -> HttpResponse:
    """The ASP.NET Core docs' groups sample page, unchanged (any room name, no history)."""
    return render(request, "chat/sample.html")
