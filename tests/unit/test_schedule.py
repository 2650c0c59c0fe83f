"""The keep-alive schedule: only the connections due are ticked; closed ones are forgotten at once."""

from __future__ import annotations

from signalr_groups.lifetime.registry import ConnectionRegistry
from signalr_groups.lifetime.schedule import MAX_GAP_HEARTBEATS, KeepAliveSchedule
from tests.fakes import FakeConnection


class Due(FakeConnection):
    """A connection that asks for its next look at ``self.next_due`` (None: the next heartbeat)."""

    next_due: float | None = None

    def tick(self, now: float) -> float | None:
        super().tick(now)
        return self.next_due


def _schedule(*connections: FakeConnection) -> tuple[KeepAliveSchedule, ConnectionRegistry]:
    registry = ConnectionRegistry()
    schedule = KeepAliveSchedule(registry, lambda: 1.0)
    for connection in connections:
        registry.add(connection)
        schedule.add(connection, 100.0)
    return schedule, registry


async def test_a_connection_is_ticked_when_due_and_not_before():
    quiet, busy = Due("quiet"), Due("busy")
    quiet.next_due = 110.0  # its ping is due in ten seconds
    schedule, _ = _schedule(quiet, busy)
    assert await schedule.run_due(100.0) == 2
    for second in range(101, 110):
        await schedule.run_due(float(second))
    # quiet was looked at again after MAX_GAP_HEARTBEATS (settings may change), busy every heartbeat
    assert quiet.ticks == 1 + 9 // MAX_GAP_HEARTBEATS
    assert busy.ticks == 10


async def test_a_closed_connection_is_forgotten_and_never_ticked():
    gone, stays = Due("gone"), Due("stays")
    schedule, registry = _schedule(gone, stays)
    registry.remove(gone)
    schedule.remove("gone")
    assert len(schedule) == 1
    assert await schedule.run_due(100.0) == 1
    assert gone.ticks == 0 and stays.ticks == 1


async def test_an_unregistered_connection_left_in_a_bucket_is_skipped_and_dropped():
    gone = Due("gone")
    schedule, registry = _schedule(gone)
    registry.remove(gone)  # (without schedule.remove)
    assert await schedule.run_due(100.0) == 0
    assert len(schedule) == 0


async def test_clear_forgets_everything():
    schedule, _ = _schedule(Due("a"), Due("b"))
    schedule.clear()
    assert len(schedule) == 0
    assert await schedule.run_due(1000.0) == 0


async def test_a_tick_that_raises_is_logged_and_the_connection_stays_scheduled(caplog):
    class Broken(Due):
        def tick(self, now: float) -> float | None:
            raise RuntimeError("boom")

    broken = Broken("broken")
    schedule, _ = _schedule(broken)
    await schedule.run_due(100.0)
    assert "keep-alive sweep failed for broken" in caplog.text
    assert len(schedule) == 1
