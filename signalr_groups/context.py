"""The caller's context inside a hub (``HubCallerContext``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HubCallerContext:
    """Who is calling: the connection id, the Django user, the user identifier, and per-connection items.

    ``items`` is a dict that lives as long as the connection (hub instances do not). ``abort()``
    closes the connection with a Close message that tells the client not to reconnect.
    """

    __slots__ = ("_abort", "connection_id", "items", "scope", "user", "user_identifier")

    def __init__(
        self,
        *,
        connection_id: str,
        user: Any,
        user_identifier: str | None,
        scope: dict[str, Any],
        abort: Callable[[], None],
    ) -> None:
        self.connection_id = connection_id
        self.user = user
        self.user_identifier = user_identifier
        self.scope = scope
        self.items: dict[Any, Any] = {}
        self._abort = abort

    def abort(self) -> None:
        """Close this connection for good (Close message without ``allowReconnect``)."""
        self._abort()
