"""The sliced fan-out (:mod:`signalr_groups.lifetime.fanout`): a real registry, fake connections, zero-length slices.

With ``SLICE_SECONDS`` at 0 every slice ends at the first look at the clock, so a send to a few hundred
connections always spans several slices (event-loop turns): what the module promises about delivery, order,
membership, failures and stopping is then checked deterministically, with no timing involved.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from signalr_groups.addressing import Address
from signalr_groups.lifetime import fanout
from signalr_groups.lifetime.fanout import FanOut
from signalr_groups.lifetime.registry import ConnectionRegistry
from signalr_groups.protocol.serialized import SerializedInvocation
from tests.fakes import FakeConnection

#: Members of the big group: many slices at any plausible number of recipients per look at the clock.
MEMBERS = 200
GROUP = Address("groups", ("g",))


@pytest.fixture(autouse=True)
def zero_length_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "SLICE_SECONDS", 0.0)


class Counter:
    """The fan-out's ``on_delivered`` callback: one call per slice that delivered something."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, count: int) -> None:
        self.calls.append(count)

    @property
    def total(self) -> int:
        return sum(self.calls)


class Exploding(FakeConnection):
    """A connection whose delivery raises (a bug in a transport, say)."""

    def deliver(self, record: Any) -> None:
        raise RuntimeError(f"{self.connection_id} cannot take it")


class Recording(FakeConnection):
    """Also keeps the very objects delivered."""

    def __init__(self, connection_id: str, user: str | None = None) -> None:
        super().__init__(connection_id, user)
        self.objects: list[Any] = []

    def deliver(self, record: Any) -> None:
        self.objects.append(record)
        super().deliver(record)


def _record(label: str) -> SerializedInvocation:
    return SerializedInvocation.of("T", (label,))


def labels(connection: FakeConnection) -> list[str]:
    """What a fake connection received, as the labels of :func:`_record`."""
    return [json.loads(text.rstrip("\x1e"))["arguments"][0] for text in connection.records]


def _group_of(size: int, registry: ConnectionRegistry, prefix: str = "m", group: str = "g") -> list[Recording]:
    members = [Recording(f"{prefix}{index}", user=f"user{index}") for index in range(size)]
    for member in members:
        registry.add(member)
        registry.join(member.connection_id, group)
    return members


async def _finish(future: Awaitable[Any] | None) -> None:
    if future is not None:
        await asyncio.wait_for(future, 5)


# ---------------------------------------------------------------------- (a) delivery, and what deliver returns


async def test_a_sliced_send_reaches_every_member_once_and_deliver_returns_a_future():
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    counter = Counter()
    fan = FanOut(registry, counter)

    pending = fan.deliver(GROUP, _record("hello"))
    assert pending is not None, "a send to 200 members with zero-length slices must be sliced"
    reached_now = sum(1 for member in members if member.records)
    assert 0 < reached_now < MEMBERS, "the first slice is delivered in the sender's call, the rest later"
    assert fan.backlog == 1

    await _finish(pending)
    assert all(labels(member) == ["hello"] for member in members)
    assert len(counter.calls) > 1 and counter.total == MEMBERS  # several slices, each member counted once
    assert fan.backlog == 0


async def test_a_send_that_fits_in_one_slice_is_delivered_at_once_and_returns_none():
    registry = ConnectionRegistry()
    members = _group_of(5, registry)
    counter = Counter()
    fan = FanOut(registry, counter)
    assert fan.deliver(GROUP, _record("small")) is None
    assert all(labels(member) == ["small"] for member in members)  # before any await
    assert counter.calls == [5]
    assert fan.deliver(Address("groups", ("nobody",)), _record("void")) is None  # no recipient at all


async def test_the_same_shared_record_object_reaches_every_member():
    """The fan-out hands every member the one SerializedInvocation (its frame is built once per send)."""
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    record = _record("shared")
    await _finish(FanOut(registry, Counter()).deliver(GROUP, record))
    assert all(len(member.objects) == 1 and member.objects[0] is record for member in members)


# ---------------------------------------------------------------------- (b) order between sends


async def test_back_to_back_sends_keep_their_order_at_every_connection():
    """A group send, a send to one member and another group send made while the first is still queued."""
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    loner = FakeConnection("loner")
    registry.add(loner)
    fan = FanOut(registry, Counter())
    target = members[-1]

    first = fan.deliver(GROUP, _record("A"))
    assert first is not None and fan.backlog == 1  # still queued when the next sends are made
    to_one = fan.deliver(Address("connections", (target.connection_id,)), _record("B"))
    assert to_one is not None, "a send to one connection queues behind a queued send (or it could overtake it)"
    to_all = fan.deliver(Address("all"), _record("C"))
    last = fan.deliver(GROUP, _record("D"))
    assert to_all is not None and last is not None
    assert "B" not in labels(target) and labels(loner) == []  # nothing queued is delivered before its turn

    await _finish(asyncio.gather(first, to_one, to_all, last))
    for member in members:
        expected = ["A", "B", "C", "D"] if member is target else ["A", "C", "D"]
        assert labels(member) == expected, member.connection_id
    assert labels(loner) == ["C"]


async def test_interleaved_senders_keep_each_senders_order_at_every_member():
    """Three senders alternating group sends (as concurrent hub methods would): every member sees each one's in order."""
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    fan = FanOut(registry, Counter())
    futures = []
    for index in range(20):
        for sender in "xyz":
            future = fan.deliver(GROUP, _record(f"{sender}{index}"))
            if future is not None:
                futures.append(future)
        await asyncio.sleep(0)  # let the pump run between rounds, as the senders' own awaits would
    await _finish(asyncio.gather(*futures))
    expected = [f"{sender}{index}" for index in range(20) for sender in "xyz"]
    assert all(labels(member) == expected for member in members)


# ---------------------------------------------------------------------- (c) membership checked again per slice


@pytest.mark.parametrize("kind", ["groups", "users", "all", "connections"])
async def test_a_recipient_that_left_before_its_slice_is_skipped_and_a_newcomer_gets_nothing(kind):
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    if kind == "groups":
        address = GROUP
    elif kind == "users":
        address = Address("users", tuple(member.user_identifier or "" for member in members))
    elif kind == "all":
        address = Address("all")
    else:
        address = Address("connections", tuple(member.connection_id for member in members))
    fan = FanOut(registry, Counter())

    pending = fan.deliver(address, _record("news"))
    assert pending is not None
    waiting = [member for member in members if not member.records]
    assert len(waiting) >= 3, "the test needs recipients left for later slices"
    unregistered, replaced = waiting[0], waiting[1]
    registry.remove(unregistered)  # disconnected: skipped, whatever the address
    registry.remove(replaced)  # another connection object under the same id: not the one the send was for
    replacement = FakeConnection(replaced.connection_id, user=replaced.user_identifier)
    registry.add(replacement)
    registry.join(replacement.connection_id, "g")
    left = None
    if kind == "groups":
        left = waiting[2]
        registry.leave(left.connection_id, "g")  # still connected, no longer a member
    elif kind == "users":
        left = waiting[2]
        registry.remove(left)  # a user's connection leaves the user's index only by unregistering
    newcomer = FakeConnection("newcomer", user="user0")
    registry.add(newcomer)
    registry.join("newcomer", "g")

    await _finish(pending)
    skipped = {unregistered.connection_id, replaced.connection_id} | ({left.connection_id} if left else set())
    for member in members:
        assert labels(member) == ([] if member.connection_id in skipped else ["news"]), member.connection_id
    assert labels(replacement) == [] and labels(newcomer) == []


async def test_the_first_slice_uses_the_recipients_taken_at_the_send():
    """A member removed before the send is not reached; one added before it is (no stale list anywhere)."""
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    registry.leave(members[0].connection_id, "g")
    late = FakeConnection("late")
    registry.add(late)
    registry.join("late", "g")
    await _finish(FanOut(registry, Counter()).deliver(GROUP, _record("x")))
    assert labels(members[0]) == [] and labels(late) == ["x"]
    assert all(labels(member) == ["x"] for member in members[1:])


# ---------------------------------------------------------------------- (d) one failing connection


async def test_a_connection_whose_delivery_raises_costs_the_others_nothing(caplog):
    registry = ConnectionRegistry()
    connections: list[FakeConnection] = []
    for index in range(MEMBERS):  # every 10th explodes: some in the sender's slice, some in later ones
        connection = (Exploding if index % 10 == 0 else FakeConnection)(f"c{index}")
        registry.add(connection)
        registry.join(connection.connection_id, "g")
        connections.append(connection)
    exploding = {c.connection_id for c in connections if isinstance(c, Exploding)}
    counter = Counter()
    fan = FanOut(registry, counter)

    with caplog.at_level(logging.ERROR, logger="signalr_groups.lifetime.fanout"):
        first = fan.deliver(GROUP, _record("one"))
        second = fan.deliver(GROUP, _record("two"))
        await _finish(first)  # completes normally: the failures are not the sender's
        await _finish(second)

    for connection in connections:
        if connection.connection_id not in exploding:
            assert labels(connection) == ["one", "two"], connection.connection_id
    logged = [r for r in caplog.records if r.name == "signalr_groups.lifetime.fanout" and r.exc_info]
    failed = [record.args[0] for record in logged if isinstance(record.args, tuple)]
    assert sorted(failed) == sorted([*exploding, *exploding]), "each failed delivery is logged, with its traceback"
    assert all(isinstance(record.exc_info[1], RuntimeError) for record in logged if record.exc_info)
    assert counter.total == 2 * (MEMBERS - len(exploding))
    assert fan.backlog == 0


# ---------------------------------------------------------------------- (e) stopping


async def _sender(fan: FanOut, label: str) -> str:
    """What a hub method does: deliver, then await the last slice."""
    pending = fan.deliver(GROUP, _record(label))
    if pending is not None:
        await pending
    return "returned"


async def test_stop_while_slices_are_queued_lets_every_waiting_sender_return():
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    fan = FanOut(registry, Counter())
    senders = [asyncio.ensure_future(_sender(fan, label)) for label in ("first", "second")]
    for _ in range(3):  # the pump has started and delivered some later slices
        await asyncio.sleep(0)
    assert fan.backlog == 2
    fan.stop()
    done, _pending = await asyncio.wait(senders, timeout=5)
    assert len(done) == 2, "a sender waiting for its slices hung after stop()"
    assert [task.result() for task in senders] == ["returned", "returned"]  # no CancelledError for them
    assert fan.backlog == 0
    assert any(labels(member) == [] for member in members)  # what was left undelivered was dropped


async def test_stop_right_after_a_sliced_send_lets_its_sender_return_and_later_sends_work():
    """stop() in the same event-loop turn as the send (the pump task created, not yet started): the manager
    stops (its last connection left) and may start again later with the same fan-out."""
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    fan = FanOut(registry, Counter())
    pending = fan.deliver(GROUP, _record("dropped"))
    assert pending is not None
    fan.stop()
    try:
        await asyncio.wait_for(asyncio.shield(pending), 2)
    except TimeoutError:
        pytest.fail(f"the sender's future never completed after stop() (backlog {fan.backlog})")
    assert fan.backlog == 0
    later = fan.deliver(GROUP, _record("later"))  # the manager started again: sends must still go out
    try:
        await _finish(later)
    except TimeoutError:
        pytest.fail("a send made after stop() never completed: the fan-out is wedged")
    assert all(labels(member)[-1:] == ["later"] for member in members)


async def test_a_cancelled_sender_does_not_stop_the_delivery_of_its_send():
    """A hub method cancelled while awaiting its slices (client gone): the members still get the send, once."""
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    fan = FanOut(registry, Counter())
    sender = asyncio.ensure_future(_sender(fan, "orphan"))
    await asyncio.sleep(0)
    sender.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sender
    follow_up = fan.deliver(GROUP, _record("next"))
    await _finish(follow_up)
    assert all(labels(member) == ["orphan", "next"] for member in members)


# ---------------------------------------------------------------------- the sender waits for its last slice


async def test_a_hub_send_returns_only_once_every_local_member_has_it():
    """``await clients.group(...).send(...)`` (sending.send) awaits the last slice: a hub method's completion,
    written after it returns, cannot overtake the group message at any member."""
    from signalr_groups.lifetime.managers import get_manager
    from signalr_groups.lifetime.sending import send

    manager = get_manager("fanout-slices-test", create=True)
    assert manager is not None
    members = [FakeConnection(f"s{index}") for index in range(MEMBERS)]
    for member in members:
        await manager.connect(member)
        await manager.add_local(member.connection_id, "room")
    try:
        assert manager.running
        for round_ in range(3):
            await send("fanout-slices-test", Address("groups", ("room",)), "T", (f"r{round_}",))
            assert all(len(member.records) == round_ + 1 for member in members), f"round {round_}"
        assert manager.fanout.backlog == 0
    finally:
        for member in members:
            await manager.disconnect(member)
    assert not manager.running


async def test_a_send_from_another_process_is_delivered_before_the_next_layer_message():
    """The layer handler awaits the slices too: the next layer message (in order) waits for them."""
    from signalr_groups.lifetime.manager import HubLifetimeManager

    manager = HubLifetimeManager("fanout-slices-test", None)
    members = [FakeConnection(f"l{index}") for index in range(MEMBERS)]
    for member in members:
        await manager.connect(member)
        await manager.add_local(member.connection_id, "g")
    message = {"type": "signalr.send", "origin": "elsewhere", "address": GROUP.to_wire()}
    try:
        for index in range(3):
            await manager.handle_layer_message({**message, "payload": f"p{index}", "id": f"i{index}"})
            assert all(member.records == [f"p{n}" for n in range(index + 1)] for member in members)
    finally:
        for member in members:
            await manager.disconnect(member)


# ---------------------------------------------------------------------- (f) the delivered count


async def test_the_delivered_callback_counts_exactly_the_deliveries_made():
    registry = ConnectionRegistry()
    members = _group_of(MEMBERS, registry)
    broken = Exploding("broken")
    registry.add(broken)
    registry.join("broken", "g")
    counter = Counter()
    fan = FanOut(registry, counter)
    pending = fan.deliver(GROUP, _record("counted"))
    assert pending is not None
    gone = [member for member in members if not member.records][:5]
    for member in gone:
        registry.leave(member.connection_id, "g")
    await _finish(pending)
    delivered = sum(len(member.records) for member in members)
    assert delivered == MEMBERS - len(gone)
    assert counter.total == delivered
    assert all(count > 0 for count in counter.calls)  # no empty reports


# ---------------------------------------------------------------------- (g) who a send reaches


def _ids(connections: list[Any]) -> list[str]:
    return sorted(connection.connection_id for connection in connections)


def test_recipients_of_every_address_kind():
    registry = ConnectionRegistry()
    a1, a2 = FakeConnection("a1", "alice"), FakeConnection("a2", "alice")
    b, c = FakeConnection("b", "bob"), FakeConnection("c")
    for connection in (a1, a2, b, c):
        registry.add(connection)
    for connection_id, group in (("a1", "G"), ("a1", "H"), ("b", "G"), ("b", "H"), ("c", "H")):
        registry.join(connection_id, group)

    assert _ids(registry.recipients(Address("all"))) == ["a1", "a2", "b", "c"]
    assert _ids(registry.recipients(Address("all", exclude=frozenset({"c", "ghost"})))) == ["a1", "a2", "b"]
    union = registry.recipients(Address("groups", ("G", "H", "nowhere")))
    assert _ids(union) == ["a1", "b", "c"] and len(union) == 3  # in both groups: once
    assert _ids(registry.recipients(Address("groups", ("G", "H"), frozenset({"b"})))) == ["a1", "c"]
    assert _ids(registry.recipients(Address("groups", ("H",), frozenset({"a1"})))) == ["b", "c"]
    assert registry.recipients(Address("groups", ("nowhere",))) == []
    assert _ids(registry.recipients(Address("users", ("alice", "bob", "nobody")))) == ["a1", "a2", "b"]
    assert _ids(registry.recipients(Address("users", ("alice",), frozenset({"a2"})))) == ["a1"]
    assert _ids(registry.recipients(Address("connections", ("c", "ghost", "a2")))) == ["a2", "c"]
    assert _ids(registry.recipients(Address("connections", ("c", "b"), frozenset({"b"})))) == ["c"]
    # The very objects registered (the fan-out compares identity when it checks again).
    assert registry.recipients(Address("connections", ("b",)))[0] is b


def test_addressed_follows_registration_and_membership():
    registry = ConnectionRegistry()
    a, b = FakeConnection("a", "alice"), FakeConnection("b", "bob")
    registry.add(a)
    registry.add(b)
    registry.join("a", "G")
    assert registry.addressed(Address("groups", ("G",)), a)
    assert registry.addressed(Address("groups", ("X", "G")), a)
    assert not registry.addressed(Address("groups", ("G",)), b)
    assert registry.addressed(Address("users", ("alice",)), a) and not registry.addressed(Address("users", ("x",)), a)
    assert registry.addressed(Address("all"), b) and registry.addressed(Address("connections", ("b",)), b)
    registry.leave("a", "G")
    assert not registry.addressed(Address("groups", ("G",)), a)
    registry.remove(b)
    assert not registry.addressed(Address("all"), b)
    impostor = FakeConnection("a", "alice")  # same id, another object: not the registered connection
    assert not registry.addressed(Address("all"), impostor)
