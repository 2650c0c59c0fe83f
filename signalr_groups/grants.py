"""Group access: which restricted groups a user may be in, and until when.

A hub lists its restricted groups (``Hub.restricted_groups``, exact names or prefixes ending in
``*``); joining one needs an active :class:`~signalr_groups.models.GroupGrant` to the user or to one
of the user's auth groups. Access lasts until the latest expiry among the grants that cover the group.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from django.utils import timezone

from signalr_groups.exceptions import HubError

#: The client event a connection receives when it loses a restricted group: (groupName, reason).
GROUP_ACCESS_REVOKED: Final = "GroupAccessRevoked"

GrantList = list[tuple[str, float | None]]


class GroupAccessDeniedError(HubError):
    """Joining a restricted group without a valid grant."""


def active_grants(user: Any, hub_key: str, now: datetime | None = None) -> GrantList:
    """``[(pattern, expires_at_unix_or_None), …]`` of the user's active grants in a hub (reads the DB)."""
    from signalr_groups.models import GroupGrant

    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return []
    grants = GroupGrant.objects.active(now).for_user(user).filter(hub=hub_key).values_list("group", "expires_at")
    return [(pattern, None if expires is None else expires.timestamp()) for pattern, expires in grants]


def access_until(grants: GrantList, group: str) -> tuple[bool, float | None]:
    """Whether ``grants`` cover ``group``, and until when (``None``: no expiry)."""
    from signalr_groups.models import grant_matches

    covering = [expires for pattern, expires in grants if grant_matches(pattern, group)]
    if not covering:
        return False, None
    if any(expires is None for expires in covering):
        return True, None
    return True, max(expiry for expiry in covering if expiry is not None)


def fresh_active_grants(user: Any, hub_key: str) -> GrantList:
    """:func:`active_grants` for a user re-read from the database (the connection's copy may be stale)."""
    from signalr_groups.permissions import fresh_user

    return active_grants(fresh_user(user), hub_key, timezone.now())
