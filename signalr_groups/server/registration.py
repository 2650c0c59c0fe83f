"""Registering a new connection with the lifetime manager, before its handshake is answered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.db import DatabaseError

from signalr_groups.exceptions import LimitExceededError
from signalr_groups.server.hub_calls import GENERIC_CLOSE_ERROR

if TYPE_CHECKING:
    from signalr_groups.server.connection import HubConnection

logger = logging.getLogger(__name__)

#: Closes the connection: ``(error, allow_reconnect, exception)``.
Close = Callable[[str, bool, BaseException | None], None]


async def register(connection: HubConnection, close: Close) -> bool:
    """Register with the lifetime manager, re-check the credentials, run the extensions' hooks.

    Bounded by ``HANDSHAKE_TIMEOUT``: a hung layer or database must not keep the client waiting
    for the handshake's answer. A failure closes the connection (``close``) with a clear error.
    Returns whether the connection got registered (it must then be unregistered).
    """
    unreachable = f"{GENERIC_CLOSE_ERROR} The server cannot reach its channel layer; retry."
    registered = False
    try:
        async with asyncio.timeout(connection.settings.handshake_timeout):
            try:
                await connection.manager.connect(connection)
                registered = True
            except LimitExceededError as exc:
                logger.info("signalr_groups: refused %s: %s", connection.connection_id, exc)
                close(str(exc), False, exc)
                return False
            except Exception as exc:
                logger.exception("signalr_groups: could not register %s (layer down?)", connection.connection_id)
                close(unreachable, True, exc)
                return False
            # A logout or password change that committed between the authentication check and
            # registration found no connection to close: look again now we are reachable.
            if connection.credentials.checkable and not await _credentials_still_valid(connection, close):
                close("Your credentials are no longer valid.", False, None)
            if connection.state.accepting:
                await connection.manager.run_registered_hooks(connection)
    except TimeoutError as exc:
        logger.warning("signalr_groups: registering %s took too long; closing it", connection.connection_id)
        close(unreachable, True, exc)
    return registered


async def _credentials_still_valid(connection: HubConnection, close: Close) -> bool:
    """Re-check the credentials; a database that cannot answer closes with a retryable error instead."""
    try:
        return bool(await database_sync_to_async(connection.credentials.still_valid)())
    except DatabaseError as exc:
        logger.warning("signalr_groups: cannot re-check the credentials of %s: %r", connection.connection_id, exc)
        close(f"{GENERIC_CLOSE_ERROR} The server's database is unavailable; retry.", True, exc)
        return True
