"""The access guard as an extension: the hub's own restriction rule, and expiry by the wall clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from signalr_groups.access.grants import GROUP_ACCESS_REVOKED
from signalr_groups.access.guard import GroupAccessGuard
from signalr_groups.lifetime.manager import HubLifetimeManager
from tests.fakes import FakeConnection


class VipHub:
    restricted_groups = ("vip",)

    @classmethod
    def is_restricted(cls, group: str) -> bool:
        return group.startswith("vip") or group == "custom"


async def _member(manager: HubLifetimeManager, group: str) -> FakeConnection:
    connection = FakeConnection("c1", "alice", "7")
    connection.hub = VipHub
    await manager.connect(connection)
    manager.registry.join("c1", group)
    return connection


async def test_a_due_membership_ends_in_the_sweep_even_if_its_timer_has_not_fired(transactional_db):
    manager = HubLifetimeManager("guard-hub", None)
    guard = manager.extension(GroupAccessGuard)
    assert guard is not None
    connection = await _member(manager, "vip")
    # The grant's expiry is already past on the wall clock; its timer is only scheduled.
    await guard.apply_group_access("7", [("vip", time.time() - 5)], "changed")
    assert manager.registry.is_member("c1", "vip")
    guard.on_sweep()
    assert not manager.registry.is_member("c1", "vip")
    assert any(GROUP_ACCESS_REVOKED in record for record in connection.records)
    assert connection.hub_events == [("on_group_access_revoked", ("vip", "expired"))]
    await asyncio.sleep(0.3)  # the audit record is written in the background
    await manager.disconnect(connection)


async def test_the_hubs_own_restriction_rule_is_used():
    manager = HubLifetimeManager("guard-hub", None)
    guard = manager.extension(GroupAccessGuard)
    assert guard is not None
    connection = await _member(manager, "custom")  # restricted by VipHub.is_restricted only
    ended = await guard.apply_group_access("7", [], "revoked")
    assert ended == 1 and not manager.registry.is_member("c1", "custom")
    events: list[tuple[str, tuple[Any, ...]]] = connection.hub_events
    assert events == [("on_group_access_revoked", ("custom", "revoked"))]
    await manager.disconnect(connection)
