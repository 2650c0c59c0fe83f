"""A group send reaches 1,000 members on a real daphne server (raw WebSocket clients)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect

pytestmark = pytest.mark.timeout(120)

RS = "\x1e"
MEMBERS = 1000


async def _records(ws, wanted, timeout=20.0):
    """Read frames until ``wanted(record)`` matches; return that record."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv()
            for record in frame.split(RS):
                if record and wanted(json.loads(record)):
                    return json.loads(record)


async def _member(url, index, ready):
    ws = await connect(url, compression=None, open_timeout=30, max_queue=None)
    await ws.send('{"protocol":"json","version":1}' + RS)
    assert await ws.recv() == "{}" + RS
    await ws.send(json.dumps({"type": 1, "target": "JoinGroup", "arguments": ["big room"], "invocationId": "j"}) + RS)
    await _records(ws, lambda r: r.get("type") == 3 and r.get("invocationId") == "j")
    ready.release()
    return ws


async def test_group_send_reaches_1000_members(live_server_process):
    url = live_server_process.ws_url + "/interop"
    ready = asyncio.Semaphore(0)
    limit = asyncio.Semaphore(100)

    async def join(index):
        async with limit:
            return await _member(url, index, ready)

    members = await asyncio.gather(*(join(i) for i in range(MEMBERS)))
    try:
        async with connect(url, compression=None) as sender:
            await sender.send('{"protocol":"json","version":1}' + RS)
            await sender.recv()
            payload = {
                "type": 1,
                "target": "SendToGroup",
                "arguments": ["big room", "to all 1000"],
                "invocationId": "s",
            }
            await sender.send(json.dumps(payload) + RS)
            await _records(sender, lambda r: r.get("type") == 3)

            def is_message(record):
                return record.get("type") == 1 and record.get("target") == "Receive"

            results = await asyncio.gather(*(_records(ws, is_message) for ws in members))
            assert len(results) == MEMBERS
            assert all(result["arguments"] == ["group", "to all 1000"] for result in results)
    finally:
        await asyncio.gather(*(ws.close() for ws in members), return_exceptions=True)
