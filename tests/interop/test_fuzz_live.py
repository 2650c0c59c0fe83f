"""A bounded random-frame run against a live daphne: after every batch of hostile frames, a fresh connection works."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.timeout(180)

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
BATCHES = 60
FRAMES_PER_BATCH = 40
TARGETS = ["Echo", "JoinGroup", "LeaveGroup", "SendToGroup", "SendToAll", "Add", "Fail", "Crash", "Nope", ""]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-(2**70), 2**70)
    if kind == 3:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if kind in (4, 5):
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {str(_value(rng, 3)): _value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _frame(rng: random.Random) -> str | bytes:
    """One hostile frame: garbage, broken JSON, message-shaped junk, oversized or nested records, binary."""
    choice = rng.randrange(10)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))  # binary, often not UTF-8
    if choice == 1:
        return "".join(chr(rng.randrange(1, 0xFFFF)) for _ in range(rng.randrange(200))).replace("\ud800", "?")
    if choice == 2:
        return '{"type":1,"target":"Echo","arguments":[' * rng.randrange(1, 50)  # unfinished, nested
    if choice == 3:
        return json.dumps({"type": 1, "target": "Echo", "arguments": ["x" * 40_000]}) + RS  # over MAX_MESSAGE_SIZE
    if choice == 4:
        return "[" * 5000 + "]" * 5000 + RS  # deep nesting
    if choice == 5:
        return RS * rng.randrange(1, 50)
    message: dict[str, Any] = {"type": rng.choice([1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99, "1", None])}
    for field in ("invocationId", "target", "arguments", "streamIds", "result", "error", "item", "headers"):
        if rng.random() < 0.5:
            message[field] = _value(rng)
    if rng.random() < 0.5:
        message["target"] = rng.choice(TARGETS)
        message["arguments"] = [_value(rng) for _ in range(rng.randrange(3))]
    records = json.dumps(message, allow_nan=True) + RS
    return records * rng.randrange(1, 4)


async def _works(url: str) -> None:
    async with connect(url, open_timeout=10) as ws:
        await ws.send(HANDSHAKE)
        assert await asyncio.wait_for(ws.recv(), 10) == "{}" + RS
        await ws.send(json.dumps({"type": 1, "invocationId": "ok", "target": "Echo", "arguments": ["alive"]}) + RS)
        while True:
            record = json.loads(str(await asyncio.wait_for(ws.recv(), 10)).split(RS)[0])
            if record.get("invocationId") == "ok":
                assert record["result"] == "alive"
                return


async def test_random_frames_never_hurt_the_server(live_server_process):
    url = live_server_process.ws_url + "/interop"
    rng = random.Random(20261201)
    sent = 0
    for _batch in range(BATCHES):
        try:
            async with connect(url, open_timeout=10, max_size=None) as ws:
                await ws.send(HANDSHAKE)
                for _ in range(FRAMES_PER_BATCH):
                    await ws.send(_frame(rng))
                    sent += 1
                await asyncio.sleep(0.05)
        except (ConnectionClosed, InvalidStatus):
            pass  # the server closing a hostile connection is the expected answer
        await _works(url)
    assert sent > BATCHES  # the run did send (a server that refused every socket would fail _works)
