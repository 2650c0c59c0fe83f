"""Client results in-process: the server invokes a client method and awaits its Completion."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.communicator import HubClient


async def _asked(client: HubClient) -> dict[str, Any]:
    """The next record: the server's Invocation asking this client for a result."""
    invocation = await client.receive_record()
    assert invocation["type"] == 1 and invocation["invocationId"].startswith("srv-"), invocation
    return invocation


async def test_the_caller_answers_with_a_result():
    client = HubClient()
    await client.connect()
    try:
        await client.send_record(
            {"type": 1, "invocationId": "ask", "target": "AskCaller", "arguments": ["GetMessage", 2]}
        )
        invocation = await _asked(client)
        assert invocation["target"] == "GetMessage" and invocation["arguments"] == ["from the hub"]
        await client.send_record({"type": 3, "invocationId": invocation["invocationId"], "result": {"text": "x"}})
        completion = await client.receive_record()
        assert completion == {"type": 3, "invocationId": "ask", "result": {"result": {"text": "x"}}}
    finally:
        await client.disconnect()


async def test_a_client_error_reaches_the_hub_as_an_exception():
    client = HubClient()
    await client.connect()
    try:
        await client.send_record(
            {"type": 1, "invocationId": "ask", "target": "AskCaller", "arguments": ["GetMessage", 2]}
        )
        invocation = await _asked(client)
        await client.send_record({"type": 3, "invocationId": invocation["invocationId"], "error": "no handler"})
        completion = await client.receive_record()
        assert completion["result"] == {"error": "ClientResultError", "message": "no handler"}
    finally:
        await client.disconnect()


async def test_a_client_that_never_answers_times_out_and_its_late_answer_is_ignored():
    client = HubClient()
    await client.connect()
    try:
        await client.send_record(
            {"type": 1, "invocationId": "ask", "target": "AskCaller", "arguments": ["GetMessage", 0.2]}
        )
        invocation = await _asked(client)
        completion = await client.receive_record()
        assert completion["result"]["error"] == "ClientResultTimeoutError"
        await client.send_record({"type": 3, "invocationId": invocation["invocationId"], "result": "too late"})
        await client.assert_echo()  # a late answer is not a protocol error
    finally:
        await client.disconnect()


async def test_answers_never_reach_the_wrong_waiter_and_a_client_leaving_fails_the_wait():
    target, first, second = HubClient(), HubClient(), HubClient()
    for client in (target, first, second):
        await client.connect()
    try:
        target_id = await target.invoke("GetConnectionId")
        for asker, label in ((first, "1"), (second, "2")):
            await asker.send_record(
                {"type": 1, "invocationId": label, "target": "AskClient", "arguments": [target_id, "Pick", 5]}
            )
        asked = [await _asked(target), await _asked(target)]
        # Answer in the reverse order, each with its own id.
        for invocation in reversed(asked):
            await target.send_record(
                {"type": 3, "invocationId": invocation["invocationId"], "result": invocation["invocationId"]}
            )
        first_result = (await first.receive_record())["result"]["result"]
        second_result = (await second.receive_record())["result"]["result"]
        assert {first_result, second_result} == {asked[0]["invocationId"], asked[1]["invocationId"]}
        assert first_result == asked[0]["invocationId"]  # the first asker's invocation went out first

        await first.send_record(
            {"type": 1, "invocationId": "3", "target": "AskClient", "arguments": [target_id, "Pick", 5]}
        )
        await _asked(target)
        await target.disconnect()
        completion = await asyncio.wait_for(first.receive_record(), 5)
        assert completion["result"]["error"] == "ClientGoneError"
    finally:
        for client in (first, second):
            await client.disconnect()


async def test_a_connection_nobody_holds_is_gone():
    client = HubClient()
    await client.connect()
    try:
        result = await client.invoke("AskClient", "no-such-connection", "Pick", 1)
        assert result["error"] == "ClientGoneError"
    finally:
        await client.disconnect()


async def test_an_answer_for_a_caller_that_left_is_ignored():
    """A awaits B's answer, then A disconnects: B's late answer is not a protocol error (B stays)."""
    target, asker = HubClient(), HubClient()
    for client in (target, asker):
        await client.connect()
    try:
        target_id = await target.invoke("GetConnectionId")
        await asker.send_record(
            {"type": 1, "invocationId": "1", "target": "AskClient", "arguments": [target_id, "Pick", 5]}
        )
        invocation = await _asked(target)
        await asker.disconnect()
        await asyncio.sleep(0.1)
        await target.send_record({"type": 3, "invocationId": invocation["invocationId"], "result": "late"})
        await target.assert_echo()
    finally:
        await target.disconnect()
