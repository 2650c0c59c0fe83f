"""The one request/reply mechanism: answers, quorums, errors, and the earlier release's acknowledgements."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from signalr_groups.backplane.rpc import Reply, answer, ask_owner, gather

REDIS = "redis://127.0.0.1:1"  # never connected to


async def _member(layer: InMemoryChannelLayer, group: str, *, error: str | None = None, body: dict[str, Any]) -> str:
    channel = await layer.new_channel()
    await layer.group_add(group, channel)

    async def serve() -> None:
        request = await layer.receive(channel)
        await answer(layer, request, channel, body=body, error=error)

    asyncio.ensure_future(serve())
    return channel


async def test_gather_collects_one_answer_per_member():
    layer = InMemoryChannelLayer()
    one = await _member(layer, "g", body={"n": 1})
    two = await _member(layer, "g", body={"n": 2})
    replies, complete = await gather(layer, "g", {"type": "test.count"}, 1.0)
    assert complete is True
    assert {channel: reply.body["n"] for channel, reply in replies.items()} == {one: 1, two: 2}


async def test_an_answer_with_an_error_leaves_the_gather_incomplete():
    layer = InMemoryChannelLayer()
    await _member(layer, "g", body={})
    await _member(layer, "g", body={}, error="refused")
    _replies, complete = await gather(layer, "g", {"type": "test.count"}, 1.0)
    assert complete is False


async def test_an_empty_group_answers_at_once_and_nobody_owns_a_missing_connection():
    layer = InMemoryChannelLayer()
    assert await gather(layer, "empty", {"type": "test.count"}, 5.0) == ({}, True)
    assert await ask_owner(layer, "empty", {"type": "test.abort"}, 0.05) is None


async def test_without_a_quorum_the_message_still_goes_out(monkeypatch):
    """A channels-redis without the internals we read: logged, and the revocation is still sent."""
    monkeypatch.delattr(RedisChannelLayer, "_group_key")
    layer = RedisChannelLayer(hosts=[REDIS])
    sent: list[tuple[str, dict[str, Any]]] = []

    async def group_send(group: str, message: dict[str, Any]) -> None:
        sent.append((group, message))

    layer.group_send = group_send  # no Redis behind this layer
    assert await gather(layer, "sgr.account.x", {"type": "test.revoke"}, 0.1, wait_if_unknown=False) == ({}, None)
    assert sent == [("sgr.account.x", {"type": "test.revoke"})]


def test_answers_of_the_earlier_release_are_read():
    legacy = {"type": "signalr.ack", "channel": "c", "process": "p", "error": None, "request_id": "r", "users": ["a"]}
    assert Reply.from_message(legacy) == Reply("c", "p", None, {"users": ["a"]})
    assert Reply.from_message({"type": "signalr.send"}) is None


@pytest.mark.parametrize("message", [None, "text", {"type": "signalr.reply", "body": "not a dict"}])
def test_malformed_answers(message):
    reply = Reply.from_message(message)
    assert reply is None or reply.body == {}
