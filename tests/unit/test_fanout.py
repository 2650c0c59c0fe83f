"""The fan-out's shape: one serialization per send, one layer message per receiving process."""

from __future__ import annotations

import asyncio
import json

import msgpack
import pytest
from channels.layers import channel_layers
from django.test import override_settings

from signalr_groups.addressing import Address
from signalr_groups.lifetime.manager import HubLifetimeManager
from signalr_groups.lifetime.managers import _managers, get_manager
from signalr_groups.lifetime.sending import send
from signalr_groups.protocol import json as json_protocol
from signalr_groups.protocol import messagepack
from tests.fakes import FakeConnection

HUB = "fanout-test"
COUNTING = {
    "default": {"BACKEND": "tests.layers.CountingInMemoryChannelLayer", "CONFIG": {"capacity": 1000}},
}


@pytest.fixture
def counting_layer():
    with override_settings(CHANNEL_LAYERS=COUNTING):
        yield channel_layers["default"]


async def _populate(manager: HubLifetimeManager, prefix: str, size: int, group: str) -> list[FakeConnection]:
    members = [FakeConnection(f"{prefix}{i}", user=f"user{i % 70}") for i in range(size)]  # at most 15 devices each
    for member in members:
        await manager.connect(member)
        await manager.add_local(member.connection_id, group)
    return members


async def _close(manager: HubLifetimeManager, members: list[FakeConnection]) -> None:
    for member in members:
        await manager.disconnect(member)
    assert not manager.running


@pytest.mark.parametrize("size", [10, 100, 1000])
async def test_group_send_to_local_members_costs_no_layer_message(counting_layer, size):
    """Single process (in-memory layer): local members are reached in-process, whatever the size."""
    manager = get_manager(HUB, create=True)
    assert manager is not None
    members = await _populate(manager, "c", size, "room")
    counting_layer.counts.clear()
    await send(HUB, Address("groups", ("room",)), "Message", ("hello", 1))
    assert counting_layer.counts["group_send"] + counting_layer.counts["send"] == 0
    assert all(len(member.records) == 1 for member in members)
    # Serialized once: every member got the very same string object.
    assert len({id(member.records[0]) for member in members}) == 1
    assert json.loads(members[0].records[0].rstrip("\x1e")) == {
        "type": 1,
        "target": "Message",
        "arguments": ["hello", 1],
    }
    await _close(manager, members)


@pytest.mark.parametrize("size", [10, 1000])
async def test_group_send_across_processes_is_one_layer_message(counting_layer, size):
    """Two managers on one layer stand in for two server processes: still one layer message per send."""
    local = get_manager(HUB, create=True)
    assert local is not None
    remote = HubLifetimeManager(HUB, counting_layer)  # "another process": not this loop's manager
    local_members = await _populate(local, "l", size, "room")
    remote_members = await _populate(remote, "r", size, "room")
    outsider = FakeConnection("outsider")
    await remote.connect(outsider)
    await asyncio.sleep(0)
    counting_layer.counts.clear()

    await send(HUB, Address("groups", ("room",)), "Message", ("hi",))
    assert counting_layer.counts["group_send"] == 1
    # The in-memory layer's group_send makes one message per member *process* (2 here, the sender's
    # own echo included, which it ignores), never one per member.
    assert counting_layer.counts["send"] == 2
    for _ in range(200):
        if all(member.records for member in remote_members):
            break
        await asyncio.sleep(0.01)
    assert all(len(member.records) == 1 for member in local_members + remote_members)
    assert outsider.records == []

    await _close(local, local_members)
    await _close(remote, [*remote_members, outsider])


async def test_user_send_reaches_every_device_in_every_process(counting_layer):
    local = get_manager(HUB, create=True)
    assert local is not None
    remote = HubLifetimeManager(HUB, counting_layer)
    phone, laptop, other = (
        FakeConnection("phone", "alice"),
        FakeConnection("laptop", "alice"),
        FakeConnection("b", "bob"),
    )
    await local.connect(phone)
    await remote.connect(laptop)
    await remote.connect(other)
    counting_layer.counts.clear()
    await send(HUB, Address("users", ("alice",)), "Private", ("psst",))
    for _ in range(200):
        if laptop.records:
            break
        await asyncio.sleep(0.01)
    assert len(phone.records) == 1 and len(laptop.records) == 1 and other.records == []
    assert counting_layer.counts["group_send"] == 1
    await _close(local, [phone])
    await _close(remote, [laptop, other])


async def test_several_groups_reach_each_connection_once(counting_layer):
    manager = get_manager(HUB, create=True)
    assert manager is not None
    both, only_a, neither = FakeConnection("both"), FakeConnection("a"), FakeConnection("n")
    for connection in (both, only_a, neither):
        await manager.connect(connection)
    await manager.add_local("both", "A")
    await manager.add_local("both", "B")
    await manager.add_local("a", "A")
    await send(HUB, Address("groups", ("A", "B")), "T", ())
    assert (len(both.records), len(only_a.records), len(neither.records)) == (1, 1, 0)
    await _close(manager, [both, only_a, neither])


async def test_layer_membership_follows_local_membership(counting_layer):
    """A process joins a group's layer group with its first member and leaves it with its last."""
    manager = get_manager(HUB, create=True)
    assert manager is not None
    first, second = FakeConnection("1"), FakeConnection("2")
    await manager.connect(first)
    await manager.connect(second)
    layer_group = Address("groups", ("g",)).layer_group(HUB)
    await manager.add_local("1", "g")
    await manager.add_local("2", "g")
    await manager.add_local("2", "g")  # idempotent
    assert set(counting_layer.groups[layer_group]) == {manager.channel_name}
    await manager.remove_local("1", "g")
    assert layer_group in counting_layer.groups
    await manager.disconnect(second)  # leaving on disconnect is automatic
    assert layer_group not in counting_layer.groups
    assert manager.groups == {}
    await _close(manager, [first])


def test_no_manager_left_behind():
    """Managers are per event loop and weakly held: nothing leaks between tests."""
    assert all(isinstance(managers, dict) for managers in _managers.values())


async def test_a_send_the_layer_delivers_twice_reaches_members_once():
    """RedisChannelLayer can redeliver after a failed clean-up: the receiving manager drops the repeat."""
    manager = HubLifetimeManager(HUB, None)
    member = FakeConnection("m1")
    await manager.connect(member)
    await manager.add_local("m1", "g")
    message = {"type": "signalr.send", "origin": "elsewhere", "address": Address("groups", ("g",)).to_wire()}
    for payload_id in ("a", "a", "b"):
        await manager.handle_layer_message({**message, "payload": f"record-{payload_id}", "id": f"p:{payload_id}"})
    await manager.handle_layer_message({**message, "payload": "no-id"})  # an earlier release's send: delivered
    assert member.records == ["record-a", "record-b", "no-id"]
    await manager.disconnect(member)


def test_recent_ids_forget_the_oldest():
    from signalr_groups.backplane.messages import RecentIds

    ids = RecentIds(size=2)
    assert ids.first_time("1") and ids.first_time("2") and not ids.first_time("1")
    assert ids.first_time("3") and ids.first_time("1")  # "1" was forgotten once "3" came


class _Counting:
    """Wraps a serializer and counts its calls (the real one still runs)."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


async def test_a_send_to_json_and_messagepack_members_serializes_once_per_protocol(counting_layer, monkeypatch):
    """500 JSON and 500 MessagePack members in two processes: one JSON and one MessagePack serialization in
    all, one layer message, and every member of a protocol gets the very same bytes."""
    json_writes = _Counting(json_protocol.write_invocation)
    msgpack_writes = _Counting(messagepack.write_invocation)
    conversions = _Counting(messagepack.invocation_from_json_record)
    # (serialized.py calls them through its module references: patch those modules' attributes)
    monkeypatch.setattr(json_protocol, "write_invocation", json_writes)
    monkeypatch.setattr(messagepack, "write_invocation", msgpack_writes)
    monkeypatch.setattr(messagepack, "invocation_from_json_record", conversions)

    local = get_manager(HUB, create=True)
    assert local is not None
    remote = HubLifetimeManager(HUB, counting_layer)
    members: list[FakeConnection] = []
    for manager, prefix in ((local, "l"), (remote, "r")):
        for i in range(500):
            member = FakeConnection(f"{prefix}{i}", protocol="messagepack" if i % 2 else "json")
            await manager.connect(member)
            await manager.add_local(member.connection_id, "room")
            members.append(member)
    await asyncio.sleep(0)
    counting_layer.counts.clear()

    await send(HUB, Address("groups", ("room",)), "Message", ("hi", 1))
    for _ in range(200):
        if all(member.records for member in members):
            break
        await asyncio.sleep(0.01)
    assert counting_layer.counts["group_send"] == 1
    assert (json_writes.calls, msgpack_writes.calls, conversions.calls) == (1, 1, 0)
    for protocol in ("json", "messagepack"):
        for prefix in ("l", "r"):
            got = [m.records for m in members if m.protocol == protocol and m.connection_id.startswith(prefix)]
            assert all(len(records) == 1 for records in got)
            assert len({records[0] for records in got}) == 1  # the same bytes for every member
    msgpack_member = next(m for m in members if m.protocol == "messagepack")
    frame = msgpack_member.records[0]
    assert isinstance(frame, bytes)
    body = frame[1:]  # one-byte length prefix
    assert msgpack.unpackb(body) == [1, {}, None, "Message", ["hi", 1], []]
    await _close(local, [m for m in members if m.connection_id.startswith("l")])
    await _close(remote, [m for m in members if m.connection_id.startswith("r")])
