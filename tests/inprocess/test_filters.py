"""Hub filters: order, short-circuit, exceptions, lifecycle hooks, and the two that ship (logging, rate limit)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from signalr_groups import Hub, HubError, hub_method
from signalr_groups.conf import get_hub_settings
from signalr_groups.hubs.filters import (
    HubFilter,
    HubInvocationContext,
    HubLifetimeContext,
    InvokeNext,
    LoggingFilter,
    RateLimitFilter,
)
from tests.communicator import FakeUser, HubClient

#: What the filters saw, in order (reset by each test).
TRACE: list[str] = []


class Recording(HubFilter):
    """Records its name around every hook."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def invoke(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        TRACE.append(f"{self.name}>{invocation.method_name}{invocation.arguments}")
        result = await next(invocation)
        TRACE.append(f"{self.name}<{result!r}")
        return result

    async def on_connected(self, context: HubLifetimeContext, next: Any) -> None:
        TRACE.append(f"{self.name}:connected")
        await next(context)

    async def on_disconnected(self, context: HubLifetimeContext, exception: BaseException | None, next: Any) -> None:
        TRACE.append(f"{self.name}:disconnected")
        await next(context, exception)


class Doubling:
    """Not a HubFilter subclass (a filter is any object with the hooks): doubles numeric arguments."""

    async def invoke(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        arguments = [value * 2 if isinstance(value, int) else value for value in invocation.arguments]
        return await next(invocation.with_arguments(arguments))


class Refusing(HubFilter):
    """Short-circuits ``Secret``: the method never runs."""

    async def invoke(self, invocation: HubInvocationContext, next: InvokeNext) -> Any:
        if invocation.method_name == "Secret":
            raise HubError("no secrets here")
        if invocation.method_name == "Cached":
            return "from the filter"
        return await next(invocation)


class FilteredHub(Hub):
    hub_name = "filtered"
    filters = (Recording("hub"), Doubling, Refusing)

    async def on_connected(self) -> None:
        TRACE.append("hub.on_connected")

    async def on_disconnected(self, exception: BaseException | None) -> None:
        TRACE.append("hub.on_disconnected")

    @hub_method
    async def add(self, a: int, b: int) -> int:
        TRACE.append("add ran")
        return a + b

    @hub_method
    async def secret(self) -> str:
        TRACE.append("secret ran")
        return "secret"

    @hub_method
    async def cached(self) -> str:
        TRACE.append("cached ran")
        return "from the method"

    @hub_method
    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


class LimitedHub(Hub):
    hub_name = "limited"
    filters = (RateLimitFilter(rate=3),)

    @hub_method
    async def ping(self) -> str:
        return "pong"


@pytest.fixture(autouse=True)
def _reset_trace():
    TRACE.clear()


@override_settings(SIGNALR_GROUPS={"HUB_FILTERS": [Recording("global")]})
async def test_filters_run_in_order_around_calls_and_lifecycle():
    client = HubClient(FilteredHub, "/filtered")
    await client.connect()
    assert await client.invoke("Add", 1, 2) == 6  # Doubling rewrote the arguments
    await client.disconnect()
    assert TRACE == [
        "global:connected",
        "hub:connected",
        "hub.on_connected",
        "global>Add[1, 2]",
        "hub>Add[1, 2]",
        "add ran",
        "hub<6",
        "global<6",
        "global:disconnected",
        "hub:disconnected",
        "hub.on_disconnected",
    ]


async def test_a_filter_can_short_circuit_with_an_error_or_a_result():
    client = HubClient(FilteredHub, "/filtered")
    await client.connect()
    try:
        completion = await client.invoke_record("Secret")
        assert completion["error"] == (
            "An unexpected error occurred invoking 'Secret' on the server. HubException: no secrets here"
        )
        assert await client.invoke("Cached") == "from the filter"
        assert "secret ran" not in TRACE and "cached ran" not in TRACE
    finally:
        await client.disconnect()


async def test_streaming_methods_pass_through_filters():
    client = HubClient(FilteredHub, "/filtered")
    await client.connect()
    try:
        await client.send_text('{"type":4,"invocationId":"s","target":"Count","arguments":[1]}\x1e')
        records = await client.receive_records(3)
        assert [r.get("item") for r in records[:2]] == [0, 1]  # Doubling: Count(2)
        assert records[2] == {"type": 3, "invocationId": "s"}
        assert "hub>Count[1]" in TRACE
    finally:
        await client.disconnect()


async def test_the_rate_limit_refuses_a_burst_and_leaves_other_users_alone():
    alice = HubClient(LimitedHub, "/limited", user=FakeUser("alice"))
    alice_phone = HubClient(LimitedHub, "/limited", user=FakeUser("alice"))
    bob = HubClient(LimitedHub, "/limited", user=FakeUser("bob"))
    for client in (alice, alice_phone, bob):
        await client.connect()
    try:
        results = [await alice.invoke_record("Ping") for _ in range(3)]
        assert all(r.get("result") == "pong" for r in results)
        refused = await alice_phone.invoke_record("Ping")  # the same user, on another device
        assert refused["error"] == (
            "An unexpected error occurred invoking 'Ping' on the server. "
            "HubException: Too many calls: at most 3 a second."
        )
        assert await bob.invoke("Ping") == "pong"  # another user has his own bucket
    finally:
        for client in (alice, alice_phone, bob):
            await client.disconnect()


async def test_the_logging_filter_logs_calls_without_arguments(caplog):
    class LoggedHub(Hub):
        hub_name = "logged"
        filters = (LoggingFilter,)

        @hub_method
        async def echo(self, value: str) -> str:
            return value

        @hub_method
        async def fail(self) -> None:
            raise HubError("nope")

    client = HubClient(LoggedHub, "/logged", user=FakeUser("alice"))
    with caplog.at_level(logging.INFO, logger="signalr_groups.calls"):
        await client.connect()
        assert await client.invoke("Echo", "a private message") == "a private message"
        await client.invoke_record("Fail")
        await client.disconnect()
    lines = [record.getMessage() for record in caplog.records if record.name == "signalr_groups.calls"]
    assert any(line.startswith("Echo by alice (") and " took " in line for line in lines), lines
    assert any(line.startswith("Fail by alice (") and "failed after" in line and "HubError" in line for line in lines)
    assert any(line.startswith("connected: alice") for line in lines)
    assert any(line.startswith("disconnected: alice") for line in lines)
    assert not any("a private message" in line for line in lines)


def test_a_filter_without_hooks_is_refused():
    with pytest.raises(TypeError, match="is not a hub filter"):

        class BadHub(Hub):
            filters = (object(),)


def test_hub_filters_setting_is_validated():
    with (
        override_settings(SIGNALR_GROUPS={"HUB_FILTERS": ["no.such.Filter"]}),
        pytest.raises(ImproperlyConfigured, match="cannot be imported"),
    ):
        get_hub_settings()
    with (
        override_settings(SIGNALR_GROUPS={"HUB_FILTERS": [42]}),
        pytest.raises(ImproperlyConfigured, match="is not a hub filter"),
    ):
        get_hub_settings()
    with override_settings(SIGNALR_GROUPS={"HUB_FILTERS": ["signalr_groups.hubs.filters.LoggingFilter"]}):
        assert isinstance(get_hub_settings().hub_filters[0], LoggingFilter)
