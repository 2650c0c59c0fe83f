"""A member on one server process and a sender on another: what crosses between them, and when again.

Shared by the fault tests (a partition from Redis, a Sentinel failover): raw WebSocket clients, so
the tests see every record, Completion errors included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS


async def records(ws: ClientConnection, timeout: float) -> AsyncIterator[dict[str, Any]]:
    """Yield each record the server sends (pings included) until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        raw = await asyncio.wait_for(ws.recv(), max(0.05, deadline - time.monotonic()))
        for record in str(raw).split(RS):
            if record:
                yield json.loads(record)


async def completion(ws: ClientConnection, invocation_id: str, timeout: float) -> dict[str, Any]:
    """The Completion of ``invocation_id``."""
    async for record in records(ws, timeout):
        if record.get("type") == 3 and record.get("invocationId") == invocation_id:
            return dict(record)
    raise AssertionError("unreachable")


async def call(ws: ClientConnection, invocation_id: str, method: str, *args: Any) -> None:
    """Invoke a hub method (the Completion comes later)."""
    await ws.send(
        json.dumps({"type": 1, "invocationId": invocation_id, "target": method, "arguments": list(args)}) + RS
    )


class Crossing:
    """``async with Crossing(member_url, sender_url, group) as crossing``: the member joined and listens."""

    def __init__(self, member_url: str, sender_url: str, group: str) -> None:
        self.member_url, self.sender_url, self.group = member_url, sender_url, group
        #: The texts of the ``Receive`` events the member got, in order.
        self.received: list[str] = []
        self._stack = AsyncExitStack()
        self._listener: asyncio.Future[None] | None = None
        self.sender: ClientConnection

    async def __aenter__(self) -> Crossing:
        member = await self._stack.enter_async_context(connect(self.member_url, open_timeout=15))
        self.sender = await self._stack.enter_async_context(connect(self.sender_url, open_timeout=15))
        for ws in (member, self.sender):
            await ws.send(HANDSHAKE)
            assert await asyncio.wait_for(ws.recv(), 15) == "{}" + RS
        await call(member, "j", "JoinGroup", self.group)
        assert (await completion(member, "j", 15)).get("result") is True

        async def listen() -> None:
            with contextlib.suppress(TimeoutError, ConnectionClosed):
                async for record in records(member, 150):
                    if record.get("target") == "Receive":
                        self.received.append(str(record["arguments"][1]))

        self._listener = asyncio.ensure_future(listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
        await self._stack.aclose()

    async def send(self, invocation_id: str, text: str, timeout: float = 15) -> dict[str, Any]:
        """``SendToGroup(group, text)`` from the sender; its Completion."""
        await call(self.sender, invocation_id, "SendToGroup", self.group, text)
        return await completion(self.sender, invocation_id, timeout)

    async def wait_for(self, text: str, limit: float) -> None:
        """Wait until ``text`` reached the member (fails after ``limit`` seconds)."""
        deadline = time.monotonic() + limit
        while text not in self.received:
            assert time.monotonic() < deadline, f"{text!r} did not arrive in {limit} s: {self.received}"
            await asyncio.sleep(0.02)

    async def probe_until_received(self, limit: float) -> float:
        """Send probes until one reaches the member; how long that took (fails after ``limit`` seconds)."""
        started = time.monotonic()
        for probe in range(1000):
            with contextlib.suppress(AssertionError, TimeoutError):
                await self.send(f"p{probe}", f"probe-{probe}")
            await asyncio.sleep(0.3)
            if any(text.startswith("probe-") for text in self.received):
                return time.monotonic() - started
            assert time.monotonic() - started < limit, f"no traffic {limit} s later"
        raise AssertionError("unreachable")

    def assert_once_at_most(self) -> None:
        """Nothing arrived twice."""
        assert all(self.received.count(text) == 1 for text in self.received), f"duplicates: {self.received}"
