"""A wake-up many coroutines can wait on: the waits of flow control (room in a buffer, data to read)."""

from __future__ import annotations

import asyncio


class Gate:
    """``await gate.wait()`` until the next ``gate.open()``; the future behind it is made only when someone waits.

    Waiters re-check their condition after waking (``while full: await gate.wait()``), so a wake-up
    with nothing to do costs one loop turn. A waiter that is cancelled leaves the others waiting.
    """

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        """Wait for the next :meth:`open`."""
        future = self._future
        if future is None or future.done():
            future = self._future = asyncio.get_running_loop().create_future()
        await asyncio.shield(future)

    def open(self) -> None:
        """Wake every waiter."""
        future = self._future
        if future is not None:
            self._future = None
            if not future.done():
                future.set_result(None)
