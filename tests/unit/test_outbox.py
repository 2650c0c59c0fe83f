"""The outbox: batching into frames, pressure and overflow, the close marker; and the connection state."""

from __future__ import annotations

import asyncio
from typing import Any

from signalr_groups.server.outbox import BATCH_CHARS, Outbox
from signalr_groups.server.state import ConnectionState


class Events:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pressure = self.overflow = self.broken = 0
        self.fail = False

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail:
            raise OSError("the transport is gone")
        self.sent.append(message)

    def outbox(self, max_bytes: int = 1000) -> Outbox:
        def count(name: str):
            def bump() -> None:
                setattr(self, name, getattr(self, name) + 1)

            return bump

        return Outbox(
            self.send,
            connection_id="c1",
            max_bytes=max_bytes,
            on_pressure=count("pressure"),
            on_overflow=count("overflow"),
            on_broken=count("broken"),
        )


async def test_queued_records_go_out_in_one_frame_then_the_close():
    events = Events()
    outbox = events.outbox()
    for index in range(3):
        outbox.put(f"r{index}\x1e")
    outbox.close("bye\x1e")
    assert outbox.close_queued
    await asyncio.wait_for(outbox.run(), 1)
    assert events.sent == [
        {"type": "websocket.send", "text": "r0\x1er1\x1er2\x1ebye\x1e"},
        {"type": "websocket.close", "code": 1000},
    ]


async def test_frames_are_cut_at_the_batch_size():
    events = Events()
    outbox = events.outbox(max_bytes=10 * BATCH_CHARS)
    record = "x" * (BATCH_CHARS // 2)
    for _ in range(3):
        outbox.put(record)
    outbox.close(None)
    await asyncio.wait_for(outbox.run(), 1)
    assert [len(m.get("text", "")) for m in events.sent] == [BATCH_CHARS, BATCH_CHARS // 2, 0]


def test_pressure_past_a_quarter_and_overflow_past_the_bound():
    events = Events()
    outbox = events.outbox(max_bytes=100)
    outbox.put("x" * 20)
    assert (events.pressure, events.overflow) == (0, 0)
    outbox.put("x" * 20)
    assert events.pressure == 1
    outbox.put("x" * 70)
    assert events.overflow == 1
    outbox.close("closing", discard_pending=True)  # what the connection does on overflow
    assert not outbox.empty


async def test_a_broken_transport_is_reported():
    events = Events()
    events.fail = True
    outbox = events.outbox()
    outbox.put("r\x1e")
    await asyncio.wait_for(outbox.run(), 1)
    assert events.broken == 1


def test_only_handshaking_and_open_connections_accept_records():
    assert [state.accepting for state in ConnectionState] == [True, True, False, False]
