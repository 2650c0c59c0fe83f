"""MAX_PARALLEL_INVOCATIONS_PER_CLIENT: one at a time by default (as ASP.NET Core); above 1, bounded concurrency."""

from __future__ import annotations

import asyncio
import json

from django.test import override_settings

from signalr_groups import Hub, hub_method
from tests.communicator import HubClient

RS = "\x1e"


class ParallelHub(Hub):
    hub_name = "parallel"
    running = 0
    most = 0

    @hub_method
    async def wait(self, seconds: float, label: str) -> str:
        ParallelHub.running += 1
        ParallelHub.most = max(ParallelHub.most, ParallelHub.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            ParallelHub.running -= 1
        return label


async def _completion_order(delays: list[tuple[str, float]]) -> list[str]:
    ParallelHub.running = ParallelHub.most = 0
    client = HubClient(ParallelHub, "/parallel")
    await client.connect()
    try:
        await client.send_text(
            "".join(
                json.dumps({"type": 1, "invocationId": label, "target": "Wait", "arguments": [seconds, label]}) + RS
                for label, seconds in delays
            )
        )
        records = await client.receive_records(len(delays), timeout=5)
        assert all(record["result"] == record["invocationId"] for record in records)
        return [record["invocationId"] for record in records]
    finally:
        await client.disconnect()


async def test_one_at_a_time_by_default():
    assert await _completion_order([("a", 0.15), ("b", 0.01), ("c", 0.05)]) == ["a", "b", "c"]
    assert ParallelHub.most == 1


@override_settings(SIGNALR_GROUPS={"MAX_PARALLEL_INVOCATIONS_PER_CLIENT": 3})
async def test_up_to_the_limit_at_once_completions_in_any_order():
    order = await _completion_order([("a", 0.3), ("b", 0.05), ("c", 0.15), ("d", 0.01), ("e", 0.01)])
    assert order[0] == "b" and order.index("a") > order.index("c")
    assert ParallelHub.most == 3  # never more than the limit, though five were queued
