"""The nearest Python peer: python-socketio rooms, served by uvicorn (``bench.servers.sio:app``).

Same events and payloads as bench/hubs.py over Socket.IO's own protocol (engine.io v4 over a
WebSocket only): ``Echo`` answers with an ack; ``Broadcast``/``SendToGroup``/``SendToUser`` emit
``Receive`` to everyone, room ``g:<group>`` or room ``u:<user>``; ``JoinGroup``/``LeaveGroup``
enter/leave the room and ack the stamp. The user comes from the ``user`` query parameter.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import parse_qs

from bench import lagprobe

# python-socketio ships no type information; keep mypy independent of whether it is installed.
socketio: Any = importlib.import_module("socketio")

sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], ping_interval=15, ping_timeout=30)
app = socketio.ASGIApp(sio, on_startup=lagprobe.install)  # BENCH_LAG_FILE: the loop-lag probe, on uvicorn's loop


@sio.event  # type: ignore[untyped-decorator]
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    """Put the connection in its user's room."""
    user = parse_qs(environ.get("QUERY_STRING", "")).get("user")
    if user:
        await sio.enter_room(sid, f"u:{user[0]}")


@sio.on("Echo")  # type: ignore[untyped-decorator]
async def echo(sid: str, value: Any) -> Any:
    """Ack with the value."""
    return value


@sio.on("Broadcast")  # type: ignore[untyped-decorator]
async def broadcast(sid: str, payload: str) -> None:
    """Receive(payload) to everyone."""
    await sio.emit("Receive", payload)


@sio.on("SendToGroup")  # type: ignore[untyped-decorator]
async def send_to_group(sid: str, group: str, payload: str) -> None:
    """Receive(payload) to a room."""
    await sio.emit("Receive", payload, room=f"g:{group}")


@sio.on("SendToUser")  # type: ignore[untyped-decorator]
async def send_to_user(sid: str, user: str, payload: str) -> None:
    """Receive(payload) to a user's room."""
    await sio.emit("Receive", payload, room=f"u:{user}")


@sio.on("JoinGroup")  # type: ignore[untyped-decorator]
async def join_group(sid: str, group: str, stamp: str) -> str:
    """Enter a room; ack the stamp."""
    await sio.enter_room(sid, f"g:{group}")
    return stamp


@sio.on("LeaveGroup")  # type: ignore[untyped-decorator]
async def leave_group(sid: str, group: str, stamp: str) -> str:
    """Leave a room; ack the stamp."""
    await sio.leave_room(sid, f"g:{group}")
    return stamp
