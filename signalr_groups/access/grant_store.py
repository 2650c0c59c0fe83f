"""Reading grants from the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from signalr_groups.access.grants import GrantList
from signalr_groups.auth.permissions import fresh_user
from signalr_groups.models import GroupGrant


def active_grants(user: Any, hub_key: str, now: datetime | None = None) -> GrantList:
    """``[(pattern, expires_at_unix_or_None), …]`` of the user's active grants in a hub (reads the DB)."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return []
    grants = GroupGrant.objects.active(now).for_user(user).filter(hub=hub_key).values_list("group", "expires_at")
    return [(pattern, None if expires is None else expires.timestamp()) for pattern, expires in grants]


def fresh_active_grants(user: Any, hub_key: str) -> GrantList:
    """:func:`active_grants` for a user re-read from the database (the connection's copy may be stale)."""
    return active_grants(fresh_user(user), hub_key, timezone.now())
