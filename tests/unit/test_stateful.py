"""Stateful reconnect: the session's sequence state, the resumable outbox writer, and the held connections."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from signalr_groups.exceptions import ProtocolError
from signalr_groups.protocol import json as json_protocol
from signalr_groups.protocol.hub_protocols import JSON, MESSAGEPACK
from signalr_groups.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
)
from signalr_groups.server import stateful
from signalr_groups.server.outbox import Outbox
from signalr_groups.server.stateful import HeldConnections, StatefulSession

R1, R2, R3, R4 = "r1\x1e", "r2\x1e", "r3\x1e", "r4\x1e"
CLOSE = json_protocol.write_close()
#: The JSON protocol's records, typed as text.
PING, ACK, SEQUENCE = json_protocol.PING_RECORD, json_protocol.write_ack, json_protocol.write_sequence


def is_full(session: StatefulSession) -> bool:
    """``session.full``, read through a call (mypy would narrow the property between two asserts)."""
    return session.full


def waiting(session: StatefulSession) -> bool:
    return session.waiting_for_sequence


def invocation(index: int = 0) -> InvocationMessage:
    return InvocationMessage(target="send", arguments=[index])


def tracked_messages() -> list[HubMessage]:
    return [
        InvocationMessage(target="send", arguments=[1], invocation_id="1"),
        StreamItemMessage(invocation_id="s1", item=2),
        CompletionMessage(invocation_id="s1"),
        StreamInvocationMessage(invocation_id="2", target="count", arguments=[3]),
        CancelInvocationMessage(invocation_id="2"),
    ]


# --------------------------------------------------------------------------- protocol records


def test_ack_and_sequence_records_of_both_protocols():
    assert JSON.ack(5) == '{"type":8,"sequenceId":5}\x1e'
    assert JSON.sequence(12) == '{"type":9,"sequenceId":12}\x1e'
    assert json_protocol.write_ack(1) == '{"type":8,"sequenceId":1}\x1e'
    assert json_protocol.write_sequence(1) == '{"type":9,"sequenceId":1}\x1e'
    # MessagePack: a VarInt length, then the array [type, sequenceId].
    assert MESSAGEPACK.ack(5) == b"\x03\x92\x08\x05"
    assert MESSAGEPACK.sequence(300) == b"\x05\x92\x09\xcd\x01\x2c"


# --------------------------------------------------------------------------- sending side


def test_sent_records_are_numbered_from_one_and_their_sizes_kept():
    session = StatefulSession(1000)
    assert session.resend() == (1, [])
    session.track("ab")
    session.track("cde")
    session.track(b"\x01\x02\x03\x04")
    assert session.sent == 3
    assert session.buffered == 2 + 3 + 4
    assert session.resend() == (1, ["ab", "cde", b"\x01\x02\x03\x04"])


def test_an_ack_forgets_the_records_up_to_and_including_its_id():
    session = StatefulSession(1000)
    for record in ("a", "bb", "ccc"):
        session.track(record)
    session.ack(2)
    assert session.resend() == (3, ["ccc"])
    assert session.buffered == 3
    session.ack(2)  # again: nothing more to forget
    assert session.resend() == (3, ["ccc"])
    assert session.buffered == 3
    session.ack(3)
    assert session.resend() == (4, [])
    assert session.buffered == 0
    assert session.sent == 3


def test_an_ack_of_an_id_never_sent_is_a_protocol_error():
    session = StatefulSession(1000)
    session.track("a")
    session.track("bb")
    with pytest.raises(ProtocolError, match=re.escape("Ack for message 3, but only 2 were sent.")):
        session.ack(3)
    assert session.resend() == (1, ["a", "bb"])  # nothing forgotten
    assert session.buffered == 3
    session.ack(2)  # the last id sent is fine
    assert session.resend() == (3, [])


def test_the_buffer_is_full_at_buffer_size():
    session = StatefulSession(5)
    assert not is_full(session)
    session.track("ab")
    assert not is_full(session)
    session.track("cd")
    assert not is_full(session)  # 4 of 5
    session.track("e")
    assert is_full(session)  # exactly 5
    session.ack(1)
    assert not is_full(session)
    session.track("fghij")
    assert is_full(session)  # past it


async def test_an_ack_or_a_release_wakes_a_writer_waiting_for_room():
    session = StatefulSession(1)
    session.track("a")
    waiting = asyncio.ensure_future(session.room())
    await asyncio.sleep(0)
    assert not waiting.done()
    session.ack(1)
    await asyncio.wait_for(waiting, 1)
    waiting = asyncio.ensure_future(session.room())
    await asyncio.sleep(0)
    assert not waiting.done()
    session.release()
    await asyncio.wait_for(waiting, 1)


# --------------------------------------------------------------------------- receiving side


def test_only_the_invocation_types_are_numbered():
    session = StatefulSession(1000)
    untracked: list[HubMessage] = [PingMessage(), AckMessage(sequence_id=1), SequenceMessage(sequence_id=1)]
    for message in tracked_messages():
        assert session.should_process(message)
        for other in untracked:
            assert session.should_process(other)
    assert session.should_process(CloseMessage())
    assert session.ack_due() == 5
    # Exactly five ids were used: the next one is 6, so a Sequence of 6 is fine and 7 skips ahead.
    with pytest.raises(ProtocolError):
        session.reset_sequence(7)
    session.reset_sequence(6)


def test_messages_resent_after_a_sequence_are_dropped_as_duplicates():
    session = StatefulSession(1000)
    for message in tracked_messages()[:3]:
        assert session.should_process(message)
    assert session.ack_due() == 3
    session.reset_sequence(2)  # the client resends from its message 2
    assert not session.should_process(tracked_messages()[1])  # 2: seen
    assert session.should_process(PingMessage())  # not numbered, always processed
    assert not session.should_process(tracked_messages()[2])  # 3: seen
    assert session.ack_due() is None  # duplicates acknowledge nothing new
    assert session.should_process(tracked_messages()[3])  # 4: new
    assert session.ack_due() == 4


def test_every_message_is_dropped_until_the_clients_sequence():
    session = StatefulSession(1000)
    session.waiting_for_sequence = True
    for message in [*tracked_messages(), PingMessage(), AckMessage(sequence_id=1), CloseMessage()]:
        assert not session.should_process(message)
    assert waiting(session)
    assert session.ack_due() is None  # the dropped messages were not numbered
    assert session.should_process(SequenceMessage(sequence_id=1))
    assert not waiting(session)
    session.reset_sequence(1)
    assert session.should_process(invocation())
    assert session.ack_due() == 1


def test_a_sequence_id_below_one_is_a_protocol_error():
    session = StatefulSession(1000)
    for sequence_id in (0, -3):
        with pytest.raises(ProtocolError, match=re.escape(f"Sequence ID must be at least 1, got {sequence_id}.")):
            session.reset_sequence(sequence_id)
    session.reset_sequence(1)


def test_a_sequence_id_past_the_next_expected_is_a_protocol_error():
    session = StatefulSession(1000)
    text = re.escape("Sequence ID greater than amount of messages we've received.")
    with pytest.raises(ProtocolError, match=text):
        session.reset_sequence(2)  # nothing received: the next is 1
    assert session.should_process(invocation(1))
    assert session.should_process(invocation(2))
    with pytest.raises(ProtocolError, match=text):
        session.reset_sequence(4)
    session.reset_sequence(3)  # the next one, fine
    assert session.should_process(invocation(3))  # and numbered 3, new
    assert session.ack_due() == 3


def test_an_ack_is_due_once_per_new_message():
    session = StatefulSession(1000)
    assert session.ack_due() is None
    session.should_process(invocation(1))
    session.should_process(invocation(2))
    assert session.ack_due() == 2
    assert session.ack_due() is None
    session.should_process(PingMessage())
    assert session.ack_due() is None
    session.should_process(invocation(3))
    assert session.ack_due() == 3
    assert session.ack_due() is None


# --------------------------------------------------------------------------- the resumable outbox


class Socket:
    """A fake ASGI send: collects what is written; fails when asked, or after ``hold`` is resolved."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.fail = False
        self.hold: asyncio.Future[None] | None = None
        self.attempts = 0

    async def send(self, message: dict[str, Any]) -> None:
        self.attempts += 1
        if self.hold is not None:
            await self.hold
        if self.fail:
            raise OSError("the transport is gone")
        self.sent.append(message)

    @property
    def texts(self) -> list[str]:
        return [message["text"] for message in self.sent if message["type"] == "websocket.send"]


class Harness:
    def __init__(self, buffer_size: int = 1000) -> None:
        self.socket = Socket()
        self.broken = 0
        self.session = StatefulSession(buffer_size)
        self.outbox = Outbox(
            self.socket.send,
            connection_id="c1",
            max_bytes=100_000,
            on_pressure=lambda: None,
            on_overflow=lambda: None,
            on_broken=self._broke,
        )
        self.outbox.resumable(self.session, JSON.ping, JSON.sequence)

    def _broke(self) -> None:
        self.broken += 1

    def attach(self, socket: Socket) -> None:
        self.outbox.attach(socket.send, writable=None, before_close=None)


async def settle() -> None:
    """Let the writer run until it waits."""
    for _ in range(20):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


@pytest.fixture
async def writer() -> AsyncIterator[Callable[[Harness], asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []

    def start(harness: Harness) -> asyncio.Task[None]:
        task = asyncio.ensure_future(harness.outbox.run())
        tasks.append(task)
        return task

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_records_are_numbered_kept_and_written(writer):
    harness = Harness()
    harness.outbox.put(R1)
    harness.outbox.put(R2)
    writer(harness)
    await until(lambda: bool(harness.socket.sent))
    await settle()
    assert harness.socket.texts == [R1 + R2]
    assert harness.session.sent == 2
    assert harness.session.buffered == len(R1) + len(R2)
    assert harness.session.resend() == (1, [R1, R2])
    harness.outbox.put(R3)
    await until(lambda: len(harness.socket.sent) == 2)
    assert harness.socket.texts == [R1 + R2, R3]
    assert harness.session.resend() == (1, [R1, R2, R3])


async def test_the_ping_record_is_not_numbered(writer):
    assert PING is JSON.ping  # the very record the connection queues as its keep-alive
    harness = Harness()
    harness.outbox.put(PING)
    harness.outbox.put(R1)
    harness.outbox.put(PING)
    writer(harness)
    await until(lambda: bool(harness.socket.sent))
    await settle()
    assert harness.socket.texts == [PING + R1 + PING]
    assert harness.session.sent == 1
    assert harness.session.resend() == (1, [R1])
    assert harness.session.buffered == len(R1)


async def test_the_close_record_is_not_numbered(writer):
    harness = Harness()
    harness.outbox.put(R1)
    harness.outbox.close(CLOSE)
    await asyncio.wait_for(writer(harness), 1)
    assert harness.socket.sent == [
        {"type": "websocket.send", "text": R1 + CLOSE},
        {"type": "websocket.close", "code": 1000},
    ]
    assert harness.session.sent == 1
    assert harness.session.resend() == (1, [R1])


async def test_a_full_buffer_holds_the_writer_until_an_ack(writer):
    harness = Harness(buffer_size=2 * len(R1))
    for record in (R1, R2, R3):
        harness.outbox.put(record)
    writer(harness)
    await until(lambda: bool(harness.socket.sent))
    await settle()
    assert harness.socket.texts == [R1 + R2]  # full after two: R3 waits
    assert harness.session.full
    assert not harness.outbox.empty
    assert harness.session.sent == 2
    harness.outbox.put(R4)
    await settle()
    assert harness.socket.texts == [R1 + R2]  # still full
    harness.session.ack(1)
    await until(lambda: len(harness.socket.sent) == 2)
    await settle()
    assert harness.socket.texts == [R1 + R2, R3]  # room for one record only
    assert harness.session.resend() == (2, [R2, R3])
    harness.session.ack(3)
    await until(lambda: len(harness.socket.sent) == 3)
    assert harness.socket.texts == [R1 + R2, R3, R4]
    assert harness.outbox.empty


async def test_control_records_go_out_while_the_buffer_is_full(writer):
    harness = Harness(buffer_size=len(R1))
    harness.outbox.put(R1)
    harness.outbox.put(R2)
    writer(harness)
    await until(lambda: bool(harness.socket.sent))
    await settle()
    assert harness.socket.texts == [R1]
    assert harness.session.full
    harness.outbox.put_control(ACK(7))
    await until(lambda: len(harness.socket.sent) == 2)
    await settle()
    assert harness.socket.texts == [R1, ACK(7)]  # the Ack, not R2
    assert harness.session.sent == 1  # not numbered
    assert harness.session.resend() == (1, [R1])


async def test_a_close_while_full_writes_everything(writer):
    harness = Harness(buffer_size=len(R1))
    harness.outbox.put(R1)
    harness.outbox.put(R2)
    task = writer(harness)
    await until(lambda: bool(harness.socket.sent))
    await settle()
    assert harness.socket.texts == [R1]
    harness.outbox.close(CLOSE)
    await asyncio.wait_for(task, 1)
    assert harness.socket.sent == [
        {"type": "websocket.send", "text": R1},
        {"type": "websocket.send", "text": R2 + CLOSE},
        {"type": "websocket.close", "code": 1000},
    ]


async def test_after_attach_the_sequence_and_unacknowledged_records_go_first(writer):
    harness = Harness()
    harness.outbox.put(R1)
    harness.outbox.put(R2)
    writer(harness)
    await until(lambda: bool(harness.socket.sent))
    harness.session.ack(1)
    harness.outbox.detach()
    harness.outbox.put(R3)
    harness.outbox.put_control(ACK(4))  # meant for the old socket: dropped on attach
    await settle()
    assert harness.socket.texts == [R1 + R2]  # nothing written while detached
    second = Socket()
    harness.attach(second)
    await until(lambda: len(second.sent) == 2)
    await settle()
    assert second.texts == [SEQUENCE(2) + R2, R3]
    assert harness.socket.texts == [R1 + R2]
    assert harness.session.resend() == (2, [R2, R3])


async def test_an_attach_with_everything_acknowledged_sends_only_the_sequence(writer):
    harness = Harness()
    harness.outbox.put(R1)
    harness.outbox.put(R2)
    writer(harness)
    await until(lambda: bool(harness.socket.sent))
    harness.session.ack(2)
    harness.outbox.detach()
    second = Socket()
    harness.attach(second)
    await until(lambda: bool(second.sent))
    await settle()
    assert second.texts == [SEQUENCE(3)]


async def test_a_failed_write_keeps_the_records_for_the_next_socket(writer):
    harness = Harness()
    harness.socket.fail = True
    harness.outbox.put(R1)
    task = writer(harness)
    await until(lambda: harness.broken > 0)
    await settle()
    assert harness.broken == 1
    assert harness.socket.attempts == 1
    assert not task.done()  # waits for the next socket instead of ending
    harness.outbox.put(R2)
    await settle()
    assert harness.broken == 1  # reported once
    assert harness.socket.attempts == 1  # no write without a socket
    harness.outbox.detach()  # what the connection does on the report
    second = Socket()
    harness.attach(second)
    await until(lambda: len(second.sent) == 2)
    await settle()
    assert second.texts == [SEQUENCE(1) + R1, R2]
    assert harness.broken == 1
    assert harness.session.resend() == (1, [R1, R2])


async def test_the_old_sockets_failure_after_an_attach_leaves_the_new_one(writer):
    harness = Harness()
    old = harness.socket
    old.hold = asyncio.get_running_loop().create_future()
    old.fail = True
    harness.outbox.put(R1)
    writer(harness)
    await until(lambda: old.attempts == 1)  # the writer is in the old socket's send
    harness.outbox.detach()
    second = Socket()
    harness.attach(second)
    await settle()
    assert second.sent == []
    old.hold.set_result(None)  # the old socket fails now
    await until(lambda: bool(second.sent))
    await settle()
    assert harness.broken == 0
    assert harness.outbox._send == second.send
    assert second.texts == [SEQUENCE(1) + R1]
    harness.outbox.put(R2)
    await until(lambda: len(second.sent) == 2)
    assert second.texts == [SEQUENCE(1) + R1, R2]


async def test_a_close_while_detached_ends_the_writer_without_writing(writer):
    harness = Harness()
    harness.outbox.put(R1)
    task = writer(harness)
    await until(lambda: bool(harness.socket.sent))
    await settle()
    harness.outbox.detach()
    harness.outbox.put(R2)
    await settle()
    assert not task.done()
    harness.outbox.close(CLOSE)
    await asyncio.wait_for(task, 1)
    assert harness.socket.sent == [{"type": "websocket.send", "text": R1}]
    assert harness.broken == 0


# --------------------------------------------------------------------------- held connections


class FakeConnection:
    def __init__(self, connection_id: str, user: str | None, address: str | None = "10.0.0.1") -> None:
        self.connection_id = connection_id
        self.user_identifier = user
        self.client_address = address
        self.expired: list[str] = []

    def expire(self, reason: str) -> None:
        self.expired.append(reason)


def hub_settings(**values: Any) -> Any:
    return override_settings(SIGNALR_GROUPS={**settings.SIGNALR_GROUPS, **values})


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(1000.0)
    monkeypatch.setattr(stateful, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


def test_past_the_cap_an_owners_oldest_held_connection_ends_at_once(clock):
    with hub_settings(MAX_HELD_CONNECTIONS_PER_USER=2):
        held = HeldConnections(object())
        first, second, third = (FakeConnection(f"c{index}", "alice") for index in range(3))
        other = FakeConnection("c9", "bob")
        for connection in (first, second, other):
            held.hold(connection)
        assert len(held) == 3
        assert [c.expired for c in (first, second, other)] == [[], [], []]
        held.hold(third)
        assert first.expired == ["its user holds more than 2 connections waiting to reconnect"]
        assert [c.expired for c in (second, third, other)] == [[], [], []]
        assert len(held) == 3
        held.on_sweep()  # within the window: nothing more ends
        assert first.expired == ["its user holds more than 2 connections waiting to reconnect"]


def test_anonymous_connections_are_capped_per_address(clock):
    with hub_settings(MAX_HELD_CONNECTIONS_PER_USER=1):
        held = HeldConnections(object())
        here = FakeConnection("a1", None, "10.0.0.1")
        there = FakeConnection("a2", None, "10.0.0.2")
        named = FakeConnection("u1", "10.0.0.1", "10.0.0.9")  # a user named like the address: another owner
        for connection in (here, there, named):
            held.hold(connection)
        assert [c.expired for c in (here, there, named)] == [[], [], []]
        again = FakeConnection("a3", None, "10.0.0.1")
        held.hold(again)
        assert here.expired == ["its user holds more than 1 connections waiting to reconnect"]
        assert [c.expired for c in (there, named, again)] == [[], [], []]
        assert len(held) == 3


def test_a_resumed_connection_is_forgotten(clock):
    with hub_settings(MAX_HELD_CONNECTIONS_PER_USER=2, DISCONNECT_TIMEOUT=10):
        held = HeldConnections(object())
        first, second, third = (FakeConnection(f"c{index}", "alice") for index in range(3))
        held.hold(first)
        held.hold(second)
        held.resume(first)
        held.resume(FakeConnection("unknown", "carol"))  # not held: nothing happens
        assert len(held) == 1
        held.hold(third)  # two held again: under the cap
        assert [c.expired for c in (first, second, third)] == [[], [], []]
        held.on_unregistered(second)  # type: ignore[arg-type]
        assert len(held) == 1
        clock.now += 60
        held.on_sweep()
        assert first.expired == [] and second.expired == []
        assert third.expired == ["the client did not reconnect in time"]
        assert len(held) == 0


def test_the_sweep_ends_connections_held_past_the_disconnect_timeout(clock):
    with hub_settings(DISCONNECT_TIMEOUT=10):
        held = HeldConnections(object())
        early, late = FakeConnection("c1", "alice"), FakeConnection("c2", None)
        held.hold(early)
        clock.now += 5
        held.hold(late)
        clock.now += 4.5
        held.on_sweep()
        assert early.expired == [] and late.expired == []
        clock.now += 0.5  # early was held exactly 10 seconds ago
        held.on_sweep()
        assert early.expired == ["the client did not reconnect in time"]
        assert late.expired == []
        assert len(held) == 1
        clock.now += 4.5
        held.on_sweep()
        assert late.expired == []
        clock.now += 0.5
        held.on_sweep()
        assert late.expired == ["the client did not reconnect in time"]
        assert early.expired == ["the client did not reconnect in time"]  # ended once
        assert len(held) == 0
        assert held._held == {}


def test_an_attach_acknowledges_again_what_the_old_socket_may_have_lost() -> None:
    """An Ack queued for a socket that died is dropped with it: the next tick must acknowledge again."""
    session = StatefulSession(1000)
    for _ in range(3):
        assert session.should_process(InvocationMessage(invocation_id=None, target="T", arguments=[], stream_ids=[]))
    assert session.ack_due() == 3
    assert session.ack_due() is None

    async def send(message: dict[str, Any]) -> None:
        pass

    outbox = Outbox(
        send,
        connection_id="c",
        max_bytes=10_000,
        on_pressure=lambda: None,
        on_overflow=lambda: None,
        on_broken=lambda: None,
    )
    outbox.resumable(session, "ping", lambda n: f"seq{n}")
    outbox.detach()
    outbox.attach(send, writable=None, before_close=None)
    assert session.ack_due() == 3
