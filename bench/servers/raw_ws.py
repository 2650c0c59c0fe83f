"""The near-physical-limit baseline: a bare ``websockets`` server speaking the same SignalR JSON records.

    python -m bench.servers.raw_ws [--port 0]

Same methods as bench/hubs.py; fan-out is one serialization and ``websockets.broadcast()`` (a frame
written per client without yielding). Prints ``listening on 127.0.0.1:PORT`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve

RS = "\x1e"
ALL: set[ServerConnection] = set()
GROUPS: dict[str, set[ServerConnection]] = {}
USERS: dict[str, set[ServerConnection]] = {}


def _frame(payload: str) -> str:
    return json.dumps({"type": 1, "target": "Receive", "arguments": [payload]}) + RS


async def _handle(ws: ServerConnection) -> None:
    query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
    user = query.get("user", [None])[0]
    joined: set[str] = set()
    await ws.recv()  # the handshake record
    await ws.send("{}" + RS)
    ALL.add(ws)
    if user:
        USERS.setdefault(user, set()).add(ws)
    try:
        async for data in ws:
            for record in str(data).split(RS):
                if record:
                    await _dispatch(ws, json.loads(record), joined)
    finally:
        ALL.discard(ws)
        if user:
            USERS.get(user, set()).discard(ws)
        for group in joined:
            GROUPS.get(group, set()).discard(ws)


async def _dispatch(ws: ServerConnection, message: dict[str, Any], joined: set[str]) -> None:
    if message.get("type") != 1:
        return
    target, args = message["target"], message["arguments"]
    result: Any = None
    if target == "Echo":
        result = args[0]
    elif target == "Broadcast":
        broadcast(ALL, _frame(args[0]))
    elif target == "SendToGroup":
        broadcast(GROUPS.get(args[0], set()), _frame(args[1]))
    elif target == "SendToUser":
        broadcast(USERS.get(args[0], set()), _frame(args[1]))
    elif target == "JoinGroup":
        GROUPS.setdefault(args[0], set()).add(ws)
        joined.add(args[0])
        result = args[1]
    elif target == "LeaveGroup":
        GROUPS.get(args[0], set()).discard(ws)
        joined.discard(args[0])
        result = args[1]
    if "invocationId" in message:
        await ws.send(json.dumps({"type": 3, "invocationId": message["invocationId"], "result": result}) + RS)


async def _main(port: int) -> None:
    async with serve(_handle, "127.0.0.1", port, compression=None, max_queue=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on 127.0.0.1:{bound}", flush=True)
        await server.serve_forever()


def main() -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(_main(args.port))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
