"""The connection registry: synchronous, no event loop, no layer."""

from __future__ import annotations

import json

from signalr_groups.addressing import Address
from signalr_groups.lifetime.registry import ConnectionRegistry
from signalr_groups.protocol.serialized import SerializedInvocation
from tests.fakes import FakeConnection


def _invocation(text: str) -> SerializedInvocation:
    return SerializedInvocation.of("T", (text,))


def _registry(*connections: FakeConnection) -> ConnectionRegistry:
    registry = ConnectionRegistry()
    for connection in connections:
        registry.add(connection)
    return registry


def test_join_and_leave_report_what_the_layer_membership_needs():
    a, b = FakeConnection("a", "alice", "1"), FakeConnection("b", "bob", "2")
    registry = _registry(a, b)
    assert registry.join("a", "g") and not registry.join("a", "g")  # idempotent
    assert registry.join("b", "g")
    assert not registry.join("ghost", "g")  # not registered
    assert registry.interested("group", "g") and registry.interested("user", "alice")
    assert registry.interested("account", "2") and not registry.interested("user", "carol")
    assert not registry.leave("a", "g")  # b is still in it
    assert registry.leave("b", "g")  # emptied
    assert not registry.interested("group", "g") and registry.groups == {}


def test_remove_returns_the_groups_left_and_the_emptied_indexes():
    a1, a2 = FakeConnection("a1", "alice", "1"), FakeConnection("a2", "alice", "1")
    registry = _registry(a1, a2)
    registry.join("a1", "g")
    registry.join("a1", "h")
    registry.join("a2", "h")
    removed = registry.remove(a1)
    assert removed is not None
    groups, emptied = removed
    assert sorted(groups) == ["g", "h"] and emptied == [("group", "g")]
    assert registry.remove(a1) is None  # not registered any more
    assert registry.remove(FakeConnection("a2")) is None  # another object under the same id
    _groups, emptied = registry.remove(a2) or ([], [])
    assert sorted(emptied) == [("account", "1"), ("group", "h"), ("user", "alice")]
    assert len(registry) == 0 and registry.users == {} and registry.accounts == {}


def test_deliver_resolves_every_address_kind_once_per_connection():
    a, b, c = FakeConnection("a", "alice"), FakeConnection("b", "bob"), FakeConnection("c")
    registry = _registry(a, b, c)
    for connection_id in ("a", "b"):
        registry.join(connection_id, "g1")
        registry.join(connection_id, "g2")
    assert registry.deliver(Address("all", exclude=frozenset({"c"})), _invocation("1")) == 2
    assert registry.deliver(Address("groups", ("g1", "g2")), _invocation("2")) == 2  # each member once
    assert registry.deliver(Address("users", ("alice", "nobody")), _invocation("3")) == 1
    assert registry.deliver(Address("connections", ("c", "ghost")), _invocation("4")) == 1
    texts = {
        name: [json.loads(r.rstrip("\x1e"))["arguments"][0] for r in conn.records]
        for name, conn in zip("abc", (a, b, c), strict=True)
    }
    assert texts == {"a": ["1", "2", "3"], "b": ["1", "2"], "c": ["4"]}


def test_account_connections_of_one_session_and_listings():
    a = FakeConnection("a", "alice", "1")
    b = FakeConnection("b", "alice", "1")
    registry = _registry(a, b)
    assert {c.connection_id for c in registry.account_connections("1")} == {"a", "b"}
    assert registry.account_connections("1", session_key="other") == []
    registry.join("a", "room")
    assert registry.members("room") == (1, ["alice"], 0)
    rows = registry.listing(group="room")
    assert [row["connection_id"] for row in rows] == ["a"] and rows[0]["groups"] == ["room"]
    assert [row["connection_id"] for row in registry.listing(user="alice")] == ["a", "b"]
