"""The join guard of restricted groups, and the end of memberships whose grant ended.

:class:`GroupAccessGuard` plugs into every lifetime manager. Before a connection joins a group
the hub restricts, it reads the user's grants afresh and refuses the join without one; an
admitted membership remembers until when its grants last, with a timer for that instant. When
a user's grants change (:data:`~signalr_groups.backplane.messages.GROUP_ACCESS`, see
:mod:`.grant_changes`), memberships no longer covered end at once and the connection gets
``GroupAccessRevoked(group, reason)``; the hub hears it through ``on_group_access_revoked``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from channels.db import database_sync_to_async

from signalr_groups.access.audit import record_revocations
from signalr_groups.access.grant_store import fresh_active_grants
from signalr_groups.access.grants import GROUP_ACCESS_REVOKED, GrantList, access_until, is_restricted
from signalr_groups.backplane.messages import GROUP_ACCESS
from signalr_groups.exceptions import GroupAccessDeniedError
from signalr_groups.lifetime.extensions import LayerHandler, ManagerExtension
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.lifetime.registry import LocalConnection
from signalr_groups.protocol.serialized import SerializedInvocation

logger = logging.getLogger(__name__)

#: A restricted membership ends this many seconds before its grant's expiry (timer latency margin).
EXPIRY_LEAD: Final = 0.01
#: How often a join re-reads the grants when a revocation raced the read.
_READ_ATTEMPTS: Final = 3


def _restricted(connection: LocalConnection, group: str) -> bool:
    """The hub's own answer (``Hub.is_restricted``, which a hub may override), else its ``restricted_groups``."""
    hub_says = getattr(connection.hub, "is_restricted", None)
    if callable(hub_says):
        return bool(hub_says(group))
    return is_restricted(getattr(connection.hub, "restricted_groups", ()), group)


def _record_expiry(hub_key: str, group: str, account: str) -> None:
    try:
        record_revocations(hub_key, group, {account}, "expired", "The grant expired.")
    except Exception:
        logger.exception("signalr_groups: could not record the expiry of %r for user %s", group, account)


class GroupAccessGuard(ManagerExtension):
    """Grant checks on join, expiry timers, and re-checks when grants change, for one lifetime manager."""

    def __init__(self, manager: HubLifetimeManager) -> None:
        super().__init__(manager)
        #: (connection id, restricted group) -> Unix time its access ends (None: no expiry).
        self.access_until: dict[tuple[str, str], float | None] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        #: Admitted joins not yet in the registry: (connection id, group) -> until.
        self._admitted: dict[tuple[str, str], float | None] = {}
        #: Bumped per account whenever its group access is re-checked (see before_join).
        self._revision: dict[str | None, int] = {}
        self._recorded_expiries: set[tuple[str, str]] = set()

    def layer_handlers(self) -> Mapping[str, LayerHandler]:
        """Answers :data:`GROUP_ACCESS` (a user's grants changed)."""
        return {GROUP_ACCESS: self._on_group_access}

    # ------------------------------------------------------------------ joining

    async def before_join(self, connection: LocalConnection, group: str) -> None:
        """Refuse a restricted group without a current grant; remember until when an admitted one lasts."""
        if not _restricted(connection, group):
            return
        account = connection.credentials.account_id
        for _attempt in range(_READ_ATTEMPTS):
            # A revocation applied while we read the grants would miss this not-yet-member:
            # read again until no access change for this account happened during the read.
            revision = self._revision.get(account, 0)
            grants = await database_sync_to_async(fresh_active_grants)(
                connection.credentials.user, self.manager.hub_key
            )
            if self._revision.get(account, 0) == revision:
                break
        else:
            raise GroupAccessDeniedError(f"Access to group '{group}' is changing; try again.")
        covered, until = access_until(grants, group)
        if until is not None and until - EXPIRY_LEAD <= time.time():
            covered = False  # expiring this very instant (see EXPIRY_LEAD)
        if not covered:
            raise GroupAccessDeniedError(f"Access to group '{group}' needs a grant, and you have none.")
        if self.manager.registry.connections.get(connection.connection_id) is connection:
            self._admitted[(connection.connection_id, group)] = until  # not if it left while we read

    def on_joined(self, connection_id: str, group: str) -> None:
        """Arm the expiry of an admitted restricted membership."""
        key = (connection_id, group)
        if key in self._admitted:
            self._set_access_until(key, self._admitted.pop(key))

    def on_left(self, connection_id: str, group: str) -> None:
        """Forget the membership's expiry (and an admission a concurrent join left unused)."""
        key = (connection_id, group)
        self.access_until.pop(key, None)
        self._admitted.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def on_unregistered(self, connection: LocalConnection) -> None:
        """Forget admissions of a connection that left before joining, and the account's revision when it is gone."""
        connection_id = connection.connection_id
        for key in [key for key in self._admitted if key[0] == connection_id]:
            del self._admitted[key]
        account = connection.credentials.account_id
        if account is not None and account not in self.manager.registry.accounts:
            self._revision.pop(account, None)

    # ------------------------------------------------------------------ expiry

    def on_sweep(self) -> None:
        """End memberships whose expiry passed on the wall clock but whose timer has not fired.

        Timers run on the monotonic clock, which stands still while a machine is suspended and
        ignores a wall clock stepped forward; grants expire by the wall clock.
        """
        if not self.access_until:
            return
        now = time.time()
        for key, until in list(self.access_until.items()):
            if until is not None and until - EXPIRY_LEAD <= now:
                self._expire(key, until)

    def _set_access_until(self, key: tuple[str, str], until: float | None) -> None:
        """Record when a restricted membership ends, and arm a timer for that instant."""
        self.access_until[key] = until
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if until is not None:
            # End a little ahead of the expiry, so that no message sent after it can still arrive.
            delay = max(0.0, until - time.time() - EXPIRY_LEAD)
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._expire, key, until)

    def _expire(self, key: tuple[str, str], until: float) -> None:
        self._timers.pop(key, None)
        if self.access_until.get(key) != until:
            return  # re-granted or extended meanwhile
        connection_id, group = key
        manager = self.manager
        connection = manager.registry.connections.get(connection_id)
        if manager.remove_now(connection_id, group):
            manager.leave_layer_group_later(group)
        if connection is None:
            return
        self._end(connection, group, "expired")
        logger.info("signalr_groups: access of %s to group %r expired", connection_id, group)
        account = connection.credentials.account_id
        if account is not None and (account, group) not in self._recorded_expiries:
            # One audit record per user and group (not per device) from this process.
            self._recorded_expiries.add((account, group))
            asyncio.get_running_loop().call_later(60, self._recorded_expiries.discard, (account, group))
            manager.spawn(database_sync_to_async(_record_expiry)(manager.hub_key, group, account))

    @staticmethod
    def _end(connection: LocalConnection, group: str, reason: str) -> None:
        """Tell the client, then the hub, that the connection lost a restricted group."""
        connection.deliver(SerializedInvocation.of(GROUP_ACCESS_REVOKED, (group, reason)))
        connection.notify_hub("on_group_access_revoked", group, reason)

    # ------------------------------------------------------------------ grant changes

    async def apply_group_access(self, account: str, grants: GrantList, cause: str) -> int:
        """Re-check a user's restricted memberships against their current grants; return how many ended.

        Memberships no longer covered end at once (before any other message is handled) and the
        connection gets ``GroupAccessRevoked(group, cause)``; the others get their new expiry.
        """
        self._revision[account] = self._revision.get(account, 0) + 1
        manager = self.manager
        emptied: list[str] = []
        ended = 0
        for connection in manager.registry.account_connections(account):
            connection_id = connection.connection_id
            for group in sorted(manager.registry.groups_of(connection_id)):
                if not _restricted(connection, group):
                    continue
                covered, until = access_until(grants, group)
                if covered:
                    self._set_access_until((connection_id, group), until)
                    continue
                if manager.remove_now(connection_id, group):
                    emptied.append(group)
                self._end(connection, group, cause)
                ended += 1
        for group in emptied:
            await manager.sync_group(group)
        return ended

    async def _on_group_access(self, message: dict[str, Any]) -> dict[str, Any]:
        # Every manager in the account's layer group answers (the quorum counts them all),
        # whichever hub it serves; only the message's hub applies it.
        if message.get("hub") == self.manager.hub_key:
            grants = [(str(pattern), None if until is None else float(until)) for pattern, until in message["grants"]]
            await self.apply_group_access(message["account"], grants, message.get("cause") or "changed")
        return {"account": message["account"]}
