"""When a busy sender or invocation loop gives the event loop back."""

from __future__ import annotations

import time
from typing import Final

#: Longest stretch of sends or invocations before the event loop is handed back (seconds).
YIELD_BUDGET: Final = 0.005


class YieldBudget:
    """Decides when to yield: an outbox filling up (its writer must run) or the time budget spent.

    Otherwise records pile up per socket and go out batched in one frame, which is what makes
    bursts cheap.
    """

    __slots__ = ("_last_yield", "pressure")

    def __init__(self) -> None:
        #: Set by an outbox past a quarter of its bound; the next check yields.
        self.pressure = False
        self._last_yield = time.monotonic()

    def report_pressure(self) -> None:
        """An outbox is filling up: its writer must run soon."""
        self.pressure = True

    def should_yield(self) -> bool:
        """Whether to give the event loop back now (resets the budget when it says yes)."""
        now = time.monotonic()
        if self.pressure or now - self._last_yield >= YIELD_BUDGET:
            self.pressure = False
            self._last_yield = now
            return True
        return False
