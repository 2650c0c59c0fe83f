"""The near-physical-limit baseline: a bare ``websockets`` server speaking the same SignalR JSON records.

    python -m bench.servers.raw_ws [--port 0] [--keepalive]

Same methods as bench/hubs.py; fan-out is one serialization and ``websockets.broadcast()`` (a frame
written per client without yielding). Prints ``listening on 127.0.0.1:PORT`` once bound.

Keep-alive: by default websockets' own, a protocol-level ping to each connection every 15 s (a task per
connection; websockets' default is 20 s, here SignalR's cadence so that every server of a step pings as often
and a 15 s measurement window holds one whole cycle of each), and the client's SignalR ping records are parsed
and ignored. ``--keepalive`` (``raw_ws-keepalive``,
the idle scenario's baseline) does SignalR's keep-alive instead, as the hub under uvicorn ``--ws-ping-interval 0``:
websockets' pings off, and a task per connection (what a bare server would write) that sends a SignalR ping record
every 15 s and closes the connection when the client sent nothing for 30 s. The client's ping records only reset
that timeout: SignalR servers (ASP.NET Core, the hub) never answer a ping with a ping.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench import lagprobe

RS = "\x1e"
KEEP_ALIVE_SECONDS = 15.0  # SignalR's KeepAliveInterval
CLIENT_TIMEOUT_SECONDS = 30.0  # SignalR's ClientTimeoutInterval
PING = '{"type":6}' + RS
KEEPALIVE = False  # --keepalive
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
    if KEEPALIVE:
        await _handle_keepalive(ws, user, joined)
        return
    try:
        async for data in ws:
            for record in str(data).split(RS):
                if record:
                    await _dispatch(ws, json.loads(record), joined)
    finally:
        _forget(ws, user, joined)


async def _handle_keepalive(ws: ServerConnection, user: str | None, joined: set[str]) -> None:
    """The receive loop of ``--keepalive``: as ``_handle``, plus the time of the last message for the timeout."""
    loop = asyncio.get_running_loop()
    heard = [loop.time()]
    pinger = asyncio.create_task(_keepalive(ws, heard))
    try:
        async for data in ws:
            heard[0] = loop.time()
            for record in str(data).split(RS):
                if record:
                    await _dispatch(ws, json.loads(record), joined)
    finally:
        pinger.cancel()
        _forget(ws, user, joined)


async def _keepalive(ws: ServerConnection, heard: list[float]) -> None:
    """A SignalR ping record every 15 s; close when the client has been silent for 30 s."""
    loop = asyncio.get_running_loop()
    while True:  # cancelled when the connection ends
        await asyncio.sleep(KEEP_ALIVE_SECONDS)
        if loop.time() - heard[0] > CLIENT_TIMEOUT_SECONDS:
            await ws.close(1000, "client timeout")
            return
        await ws.send(PING)


def _forget(ws: ServerConnection, user: str | None, joined: set[str]) -> None:
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
    ping_interval = None if KEEPALIVE else KEEP_ALIVE_SECONDS  # SignalR's cadence (websockets' default: 20 s)
    async with serve(
        _handle, "127.0.0.1", port, compression=None, max_queue=None, ping_interval=ping_interval
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on 127.0.0.1:{bound}", flush=True)
        lagprobe.install()  # BENCH_LAG_FILE: the loop-lag probe
        await server.serve_forever()


def main() -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--keepalive", action="store_true", help="SignalR pings every 15 s instead of websockets'")
    args = parser.parse_args()
    global KEEPALIVE
    KEEPALIVE = args.keepalive
    try:
        import uvloop

        uvloop.run(_main(args.port))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
