"""User identifier providers (``USER_ID_PROVIDER``); see :mod:`signalr_groups.auth.users`."""

from __future__ import annotations

from signalr_groups.auth.users import default_user_id, username_user_id

__all__ = ["default_user_id", "username_user_id"]
