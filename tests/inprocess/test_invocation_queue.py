"""Invocations from one client run one at a time, in order, with backpressure instead of unbounded queues."""

from __future__ import annotations

import json

from django.test import override_settings

from tests.communicator import RS, HubClient

BASE = {"USER_ID_PROVIDER": "signalr_groups.users.username_user_id"}


def _echo_frame(start: int, count: int) -> str:
    return "".join(
        json.dumps({"type": 1, "target": "Echo", "arguments": [i], "invocationId": str(i)}) + RS
        for i in range(start, start + count)
    )


async def test_a_burst_of_invocations_in_one_frame_is_answered_in_order():
    """The JS client batches queued sends into one frame: 300 in one frame must all be answered."""
    client = HubClient()
    await client.connect()
    try:
        await client.send_text(_echo_frame(0, 300))
        records = await client.receive_records(300, timeout=10)
        assert [record["result"] for record in records] == list(range(300))
        await client.assert_echo()
    finally:
        await client.disconnect()


@override_settings(SIGNALR_GROUPS={**BASE, "MAX_PENDING_INVOCATIONS": 5})
async def test_frames_beyond_the_queue_limit_wait_instead_of_failing():
    client = HubClient()
    await client.connect()
    try:
        for start in range(0, 40, 8):
            await client.send_text(_echo_frame(start, 8))
        records = await client.receive_records(40, timeout=10)
        assert [record["result"] for record in records] == list(range(40))
    finally:
        await client.disconnect()


@override_settings(SIGNALR_GROUPS={**BASE, "MAX_PENDING_INVOCATIONS": 5})
async def test_a_frame_of_more_than_ten_times_the_limit_closes_the_connection():
    """Parsing is synchronous, so one frame must not carry an unbounded number of records."""
    client = HubClient()
    await client.connect()
    try:
        await client.send_text(_echo_frame(0, 50))
        assert [record["result"] for record in await client.receive_records(50, timeout=10)] == list(range(50))
        await client.send_text('{"type":6}\x1e' * 51)
        await client.assert_closed(
            "Connection closed with an error. ProtocolError: Too many messages in one frame (more than 50)."
        )
    finally:
        await client.disconnect()
