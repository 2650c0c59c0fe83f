"""Delivery to local recipients in time slices, so that no send holds the event loop for long.

A send to a 4,000-member group costs tens of milliseconds of writes; done in one go it would
delay every other connection of the process (their pings, their invocations) by as much. Here a
send delivers what fits in :data:`SLICE_SECONDS` at once; the rest waits in one first-in,
first-out queue per hub, which a background task delivers a slice per event-loop turn. The
sender awaits its send's last slice (so ``await clients.group(...).send(...)`` still returns once
every local member has it, and a hub method's completion cannot overtake it).

**Order.** A send that finds the queue non-empty queues behind it, even to a single connection:
every connection receives the sends in the order they were made, as before.

**Membership.** The recipients are taken when the send is made. A recipient reached in a later
slice is checked again when its turn comes: a connection that left the group (or lost its access
to it) meanwhile is skipped, one that joined meanwhile does not get the send.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from signalr_groups.addressing import Address
from signalr_groups.lifetime.registry import ConnectionRegistry, LocalConnection
from signalr_groups.protocol.serialized import SerializedInvocation

logger = logging.getLogger(__name__)

#: Longest stretch of one fan-out in one event-loop turn (seconds).
SLICE_SECONDS: Final = 0.004
#: Recipients between two looks at the clock.
_CLOCK_EVERY: Final = 32


class _Pending:
    """A send whose recipients are not all reached yet."""

    __slots__ = ("address", "done", "position", "recipients", "record")

    def __init__(
        self,
        address: Address,
        record: SerializedInvocation,
        recipients: list[LocalConnection],
        position: int,
        done: asyncio.Future[None],
    ) -> None:
        self.address = address
        self.record = record
        self.recipients = recipients
        self.position = position
        self.done = done


class FanOut:
    """One hub's delivery to this process's connections (see the module docstring)."""

    def __init__(self, registry: ConnectionRegistry, on_delivered: Callable[[int], None]) -> None:
        self._registry = registry
        self._on_delivered = on_delivered
        self._queue: deque[_Pending] = deque()
        self._pump: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Sends waiting for their later slices."""
        return len(self._queue)

    def deliver(self, address: Address, record: SerializedInvocation) -> asyncio.Future[None] | None:
        """Deliver ``record`` to the local recipients of ``address``: None if done, else a future of the rest."""
        recipients = self._registry.recipients(address)
        position = 0
        if not self._queue:
            position = self._slice(recipients, 0, record, None)
            if position >= len(recipients):
                return None
        done = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(address, record, recipients, position, done))
        if self._pump is None:
            self._pump = asyncio.ensure_future(self._run())
        return done

    def _slice(
        self, recipients: list[LocalConnection], start: int, record: SerializedInvocation, recheck: Address | None
    ) -> int:
        """Deliver from ``start`` until the slice's time is up; return where it stopped."""
        registry = self._registry
        deadline = time.monotonic() + SLICE_SECONDS
        end = len(recipients)
        position = start
        delivered = 0
        while position < end:
            stop = min(end, position + _CLOCK_EVERY)
            while position < stop:
                connection = recipients[position]
                position += 1
                if recheck is not None and not registry.addressed(recheck, connection):
                    continue
                try:
                    connection.deliver(record)
                except Exception:  # one connection's failure must not cost the others their message
                    logger.exception("signalr_groups: delivering to %s failed", connection.connection_id)
                    continue
                delivered += 1
            if time.monotonic() >= deadline:
                break
        if delivered:
            self._on_delivered(delivered)
        return position

    async def _run(self) -> None:
        """Deliver the queued sends' slices, one per event-loop turn, first in first out."""
        queue = self._queue
        try:
            while queue:
                await asyncio.sleep(0)
                pending = queue[0]
                pending.position = self._slice(pending.recipients, pending.position, pending.record, pending.address)
                if pending.position >= len(pending.recipients):
                    queue.popleft()
                    if not pending.done.done():
                        pending.done.set_result(None)
        finally:
            if self._pump is asyncio.current_task():  # (not a pump that stop() already let go)
                self._pump = None
                self._release()

    def _release(self) -> None:
        """Let every sender still waiting return (stopped with the manager: its connections are gone)."""
        queue = self._queue
        while queue:
            pending = queue.popleft()
            if not pending.done.done():
                pending.done.set_result(None)

    def stop(self) -> None:
        """Drop what is queued (the manager stops); the senders waiting for it return.

        Done here rather than in the pump's ``finally``: a pump cancelled before its first step never
        runs its body, so its ``finally`` would not run either.
        """
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
        self._release()
