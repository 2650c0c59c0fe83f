"""Streams, in-process: server-to-client streams, client upload streams, and their protocol errors.

The texts are ASP.NET Core's (DefaultHubDispatcher): the mode mismatches, the stream-count mismatch,
``An error occurred on the server while streaming results.``, and a Completion after a cancel.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.test import override_settings

from tests.communicator import HubClient
from tests.hubs import FINISHED_STREAMS

RS = "\x1e"


def record(message: dict[str, Any]) -> str:
    return json.dumps(message) + RS


@pytest.fixture
async def client():
    connection = HubClient()
    await connection.connect()
    try:
        yield connection
    finally:
        await connection.disconnect()


async def test_a_stream_sends_its_items_then_a_completion(client):
    await client.send_text(record({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [3, 0]}))
    assert await client.receive_records(4) == [
        {"type": 2, "invocationId": "s", "item": 0},
        {"type": 2, "invocationId": "s", "item": 1},
        {"type": 2, "invocationId": "s", "item": 2},
        {"type": 3, "invocationId": "s"},
    ]
    await client.assert_echo()


async def test_a_cancel_stops_the_generator_and_its_finally_runs(client):
    connection_id = await client.invoke("GetConnectionId")
    await client.send_text(record({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [1000, 0.01]}))
    assert (await client.receive_record())["item"] == 0
    await client.send_text(record({"type": 5, "invocationId": "s"}))
    records: list[dict[str, Any]] = []
    while not records or records[-1]["type"] != 3:
        records.append(await client.receive_record())
    assert records[-1] == {"type": 3, "invocationId": "s"}  # a Completion follows the cancel, as .NET
    assert len(records) < 20
    await client.assert_nothing(0.1)  # nothing after the Completion
    assert FINISHED_STREAMS.count(connection_id) == 1


async def test_the_connection_ending_stops_its_streams():
    client = HubClient()
    await client.connect()
    connection_id = await client.invoke("GetConnectionId")
    await client.send_text(record({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [1000, 0.01]}))
    assert (await client.receive_record())["item"] == 0
    await client.disconnect()
    for _ in range(100):
        if connection_id in FINISHED_STREAMS:
            break
        await asyncio.sleep(0.01)
    assert FINISHED_STREAMS.count(connection_id) == 1


@pytest.mark.parametrize(
    ("hub_error", "error"),
    [
        (True, "An error occurred on the server while streaming results. HubException: the stream broke"),
        (False, "An error occurred on the server while streaming results."),
    ],
)
async def test_an_error_in_the_generator_ends_the_stream_with_the_dotnet_text(client, hub_error, error):
    await client.send_text(
        record({"type": 4, "invocationId": "s", "target": "FailingStream", "arguments": [2, hub_error]})
    )
    assert await client.receive_records(3) == [
        {"type": 2, "invocationId": "s", "item": 0},
        {"type": 2, "invocationId": "s", "item": 1},
        {"type": 3, "invocationId": "s", "error": error},
    ]


async def test_stream_and_non_stream_mismatches(client):
    await client.send_text(record({"type": 1, "invocationId": "a", "target": "Counter", "arguments": [1, 0]}))
    assert await client.receive_record() == {
        "type": 3,
        "invocationId": "a",
        "error": "The client attempted to invoke the streaming 'Counter' method with a non-streaming invocation.",
    }
    await client.send_text(record({"type": 4, "invocationId": "b", "target": "Echo", "arguments": [1]}))
    assert await client.receive_record() == {
        "type": 3,
        "invocationId": "b",
        "error": "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation.",
    }


async def test_an_upload_stream_is_summed(client):
    frames = [record({"type": 1, "invocationId": "u", "target": "SumStream", "arguments": [], "streamIds": ["7"]})]
    frames += [record({"type": 2, "invocationId": "7", "item": n}) for n in range(1000)]
    frames.append(record({"type": 3, "invocationId": "7"}))
    for start in range(0, len(frames), 50):  # several frames, as a client sends them
        await client.send_text("".join(frames[start : start + 50]))
    assert await client.receive_record() == {"type": 3, "invocationId": "u", "result": sum(range(1000))}


async def test_two_upload_streams_bind_in_order_around_an_argument(client):
    await client.send_text(
        record({"type": 1, "invocationId": "j", "target": "JoinStreams", "arguments": ["-"], "streamIds": ["a", "b"]})
        + record({"type": 2, "invocationId": "b", "item": "y"})
        + record({"type": 2, "invocationId": "a", "item": "x"})
        + record({"type": 3, "invocationId": "a"})
        + record({"type": 3, "invocationId": "b"})
    )
    assert await client.receive_record() == {"type": 3, "invocationId": "j", "result": "x-y"}


async def test_a_client_error_on_an_upload_reaches_the_method(client):
    await client.send_text(
        record({"type": 1, "invocationId": "u", "target": "SumStream", "arguments": [], "streamIds": ["7"]})
        + record({"type": 2, "invocationId": "7", "item": 1})
        + record({"type": 3, "invocationId": "7", "error": "the client gave up"})
    )
    completion = await client.receive_record()
    assert completion["invocationId"] == "u"
    assert completion["error"] == "An unexpected error occurred invoking 'SumStream' on the server."
    await client.assert_echo()


async def test_a_stream_count_mismatch_is_answered(client):
    await client.send_text(record({"type": 1, "invocationId": "u", "target": "SumStream", "arguments": []}))
    assert await client.receive_record() == {
        "type": 3,
        "invocationId": "u",
        "error": "An unexpected error occurred invoking 'SumStream' on the server. "
        "HubException: Client sent 0 stream(s), Hub method expects 1.",
    }


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ({"type": 2, "invocationId": "nope", "item": 1}, "Received a message for unknown invocation ID 'nope'."),
        ({"type": 3, "invocationId": "nope"}, "Received a message for unknown invocation ID 'nope'."),
    ],
)
async def test_items_and_ends_for_unknown_streams_are_protocol_errors(client, frame, reason):
    """Reliability row 13: a StreamItem or Completion for an unknown id closes the connection (the spec allows it)."""
    await client.send_text(record(frame))
    await client.assert_closed(f"Connection closed with an error. ProtocolError: {reason}")


async def test_items_after_an_upload_ended_are_protocol_errors(client):
    await client.send_text(
        record({"type": 1, "invocationId": "u", "target": "SumStream", "arguments": [], "streamIds": ["7"]})
        + record({"type": 3, "invocationId": "7"})
    )
    assert await client.receive_record() == {"type": 3, "invocationId": "u", "result": 0}
    await client.send_text(record({"type": 2, "invocationId": "7", "item": 1}))
    await client.assert_closed(
        "Connection closed with an error. ProtocolError: Received a message for unknown invocation ID '7'."
    )


@pytest.mark.parametrize("target", ["JoinStreams", "NoSuchMethod"])
async def test_a_full_upload_whose_call_ended_does_not_stall_the_connection(client, target):
    """The call ends (one stream errored, or the method does not exist) while another of its uploads is
    full and the server stopped reading for it: the connection reads again."""
    frames = record({"type": 1, "invocationId": "j", "target": target, "arguments": ["-"], "streamIds": ["a", "b"]})
    frames += "".join(record({"type": 2, "invocationId": "b", "item": str(n)}) for n in range(12))
    frames += record({"type": 3, "invocationId": "a", "error": "gave up"})
    await client.send_text(frames)
    completion = await client.receive_record()
    assert completion["invocationId"] == "j" and "error" in completion
    await client.assert_echo()  # not stalled behind the abandoned upload


async def test_a_cancel_for_an_unknown_id_is_ignored(client):
    await client.send_text(record({"type": 5, "invocationId": "never-started"}))
    await client.assert_echo()


async def test_a_reused_stream_id_is_a_protocol_error(client):
    start = {"type": 1, "target": "SumStream", "arguments": [], "streamIds": ["7"]}
    await client.send_text(record({**start, "invocationId": "u1"}) + record({**start, "invocationId": "u2"}))
    await client.assert_closed("Connection closed with an error. ProtocolError: Stream ID '7' is already in use.")


async def test_an_upload_flooding_one_frame_is_a_protocol_error(client):
    items = "".join(record({"type": 2, "invocationId": "7", "item": n}) for n in range(150))
    await client.send_text(
        record({"type": 1, "invocationId": "u", "target": "SumStream", "arguments": [], "streamIds": ["7"]}) + items
    )
    await client.assert_closed(
        "Connection closed with an error. ProtocolError: Too many items buffered for stream '7'."
    )


async def test_streams_do_not_wait_in_the_invocation_queue(client):
    """A stream runs while a slow invocation holds the one-at-a-time queue (as .NET: streams bypass it)."""
    await client.send_text(record({"type": 1, "invocationId": "slow", "target": "Slow", "arguments": ["x"]}))
    await client.send_text(record({"type": 4, "invocationId": "s", "target": "Counter", "arguments": [1, 0]}))
    first = await client.receive_record()
    assert first == {"type": 2, "invocationId": "s", "item": 0}


@override_settings(SIGNALR_GROUPS={"MAX_STREAMS_PER_CONNECTION": 2})
async def test_concurrent_streams_are_bounded():
    client = HubClient()
    await client.connect()
    try:
        for stream_id in ("a", "b", "c"):
            await client.send_text(
                record({"type": 4, "invocationId": stream_id, "target": "Counter", "arguments": [1000, 0.05]})
            )
        seen: dict[str, list[dict[str, Any]]] = {}
        while "c" not in seen:
            message = await client.receive_record()
            seen.setdefault(message["invocationId"], []).append(message)
        assert seen["c"] == [{"type": 3, "invocationId": "c", "error": "Too many streams: at most 2 at once."}]
    finally:
        await client.disconnect()
