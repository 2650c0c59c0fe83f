"""Group access, as pure functions: which restricted groups a grant covers, and until when.

A hub lists its restricted groups (``Hub.restricted_groups``, exact names or prefixes ending in
``*``); joining one needs an active :class:`~signalr_groups.models.GroupGrant` to the user or to
one of the user's auth groups. Access lasts until the latest expiry among the grants that cover
the group. Nothing here reads the database (see :mod:`.grant_store`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from signalr_groups.exceptions import GroupAccessDeniedError

__all__ = [
    "GROUP_ACCESS_REVOKED",
    "GrantList",
    "GroupAccessDeniedError",
    "access_until",
    "grant_matches",
    "is_restricted",
]

#: The client event a connection receives when it loses a restricted group: (groupName, reason).
GROUP_ACCESS_REVOKED: Final = "GroupAccessRevoked"

#: ``[(group pattern, expiry as Unix time or None), …]``: a user's active grants in one hub.
GrantList = list[tuple[str, float | None]]


def grant_matches(pattern: str, group: str) -> bool:
    """Whether a grant's ``group`` value covers a group: exact match, or a prefix ending in ``*``."""
    if pattern.endswith("*"):
        return group.startswith(pattern[:-1])
    return pattern == group


def is_restricted(restricted_groups: Iterable[str], group: str) -> bool:
    """Whether ``group`` needs a grant, given a hub's ``restricted_groups`` patterns."""
    return any(grant_matches(pattern, group) for pattern in restricted_groups)


def access_until(grants: GrantList, group: str) -> tuple[bool, float | None]:
    """Whether ``grants`` cover ``group``, and until when (``None``: no expiry)."""
    covering = [expires for pattern, expires in grants if grant_matches(pattern, group)]
    if not covering:
        return False, None
    if any(expires is None for expires in covering):
        return True, None
    return True, max(expiry for expiry in covering if expiry is not None)
