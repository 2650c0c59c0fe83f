"""User identifiers: the ``IUserIdProvider`` analogue.

A provider is a callable ``(user, scope) -> str | None``; ``USER_ID_PROVIDER`` names it. Every
connection whose provider returns a string joins that user's group, so ``clients.user(id)``
reaches all of the user's connections. ``None`` (anonymous users) means no user group.
"""

from __future__ import annotations

from typing import Any


def default_user_id(user: Any, scope: dict[str, Any]) -> str | None:
    """SignalR's default (the NameIdentifier claim): ``str(user.pk)`` for an authenticated user."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


def username_user_id(user: Any, scope: dict[str, Any]) -> str | None:
    """Use the username (``get_username()``) as the identifier, as the docs' CustomUserIdProvider does."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.get_username())
