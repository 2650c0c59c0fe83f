"""The load generator: one asyncio process, raw ``websockets`` connections, the same client for every server.

SignalR servers get the JSON hub protocol without negotiation (WebSocket, then the handshake record
``{"protocol":"json","version":1}``); python-socketio gets a minimal engine.io v4 / Socket.IO v5 client on the
same ``websockets`` connection (``/socket.io/?EIO=4&transport=websocket``, ``40`` to join the default
namespace, ``42[event,...]`` events, ``42<id>[...]``/``43<id>[...]`` acks, ``2``/``3`` pings). Either way
the payload is a string ``B<seq:9><scheduled send time ns:19>`` padded to 64 characters, so every reader
finds the send time the same way: no JSON parsing on the receive path.

Load is open-loop: send instants are fixed on an absolute timeline before the step starts, the
scheduled instant goes in the payload and a late sender sends late (never skips), so latency counts the
lateness too (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.procs import cpu_seconds

RS = "\x1e"
HANDSHAKE = '{"protocol":"json","version":1}' + RS
PING = '{"type":6}' + RS
PAYLOAD_CHARS = 64


def payload(seq: int, scheduled_ns: int) -> str:
    """The 64-character payload carrying the sequence number and scheduled send time."""
    return f"B{seq:09d}{scheduled_ns:019d}".ljust(PAYLOAD_CHARS, "x")


def percentile(ordered: list[int] | list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty list)."""
    if not ordered:
        return 0.0
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))])


class Sink:
    """What the readers record for the current step: counts, latencies, per-send fan-out."""

    def __init__(self) -> None:
        self.reset(0, 0, 0)

    def reset(self, low: int, high: int, measured_from: int, track_pairs: bool = False) -> None:
        """Start a step whose payloads use sequence numbers ``low <= seq < high``."""
        self.low, self.high, self.measured_from = low, high, measured_from
        self.count = 0
        self.stray = 0
        self.latencies: list[int] = []
        self.per_send: dict[int, list[int]] = {}
        self.pairs: dict[tuple[int, int], int] | None = {} if track_pairs else None
        self.last_ns = 0

    def record(self, conn: int, seq: int, scheduled_ns: int, now_ns: int) -> None:
        """One delivery of payload ``seq`` to connection ``conn``."""
        if not self.low <= seq < self.high:
            self.stray += 1
            return
        self.count += 1
        self.last_ns = now_ns
        latency = now_ns - scheduled_ns
        entry = self.per_send.get(seq)
        if entry is None:
            self.per_send[seq] = [1, latency]
        else:
            entry[0] += 1
            if latency > entry[1]:
                entry[1] = latency
        if seq >= self.measured_from:
            self.latencies.append(latency)
        if self.pairs is not None:
            key = (conn, seq)
            self.pairs[key] = self.pairs.get(key, 0) + 1


class Conn:
    """One client connection (SignalR JSON or Socket.IO) with its reader task."""

    def __init__(self, ws: ClientConnection, index: int, sio: bool, sink: Sink) -> None:
        self.ws, self.index, self.sio, self.sink = ws, index, sio, sink
        self.next_ack = 0
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        ws, sink, index, sio = self.ws, self.sink, self.index, self.sio
        clock = time.monotonic_ns
        try:
            async for data in ws:
                if not isinstance(data, str):
                    continue
                now = clock()
                if sio and data == "2":  # engine.io ping
                    await ws.send("3")
                    continue
                pos = data.find('"B')
                while pos >= 0:
                    sink.record(index, int(data[pos + 2 : pos + 11]), int(data[pos + 11 : pos + 30]), now)
                    pos = data.find('"B', pos + 30)
        except Exception:  # the server went away (end of a run) or dropped us: the counts show it
            return

    async def call(self, target: str, *args: Any, ack: bool = False) -> None:
        """Invoke ``target`` without waiting; ``ack`` asks for a completion (SignalR) or an ack (Socket.IO)."""
        if self.sio:
            ack_id = ""
            if ack:
                self.next_ack += 1
                ack_id = str(self.next_ack)
            await self.ws.send("42" + ack_id + json.dumps([target, *args], separators=(",", ":")))
            return
        message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
        if ack:
            self.next_ack += 1
            message["invocationId"] = str(self.next_ack)
        await self.ws.send(json.dumps(message, separators=(",", ":")) + RS)

    def abort(self) -> None:
        """Drop the TCP connection at once (the servers are stopped anyway)."""
        self.reader.cancel()
        self.ws.transport.abort()


async def open_conn(base: str, path: str, protocol: str, index: int, sink: Sink, query: str = "") -> Conn:
    """Connect and complete the SignalR handshake or the Socket.IO namespace connect."""
    sio = protocol == "sio"
    if sio:
        url = f"{base}{path}?EIO=4&transport=websocket" + (f"&{query}" if query else "")
    else:
        url = f"{base}{path}" + (f"?{query}" if query else "")
    ws = await connect(url, compression=None, max_queue=None, max_size=None, open_timeout=60, ping_interval=None)
    try:
        if sio:
            opened = await asyncio.wait_for(ws.recv(), 30)
            if not str(opened).startswith("0"):
                raise RuntimeError(f"engine.io open expected, got {opened!r}")
            await ws.send("40")
            reply = await asyncio.wait_for(ws.recv(), 30)
            if not str(reply).startswith("40"):
                raise RuntimeError(f"Socket.IO connect expected, got {reply!r}")
        else:
            await ws.send(HANDSHAKE)
            reply = await asyncio.wait_for(ws.recv(), 30)
            if not str(reply).startswith("{}" + RS):
                raise RuntimeError(f"handshake response expected, got {reply!r}")
    except BaseException:
        ws.transport.abort()
        raise
    return Conn(ws, index, sio, sink)


class Pool:
    """All client connections to one server (or two, for scale-out), with SignalR keep-alive pings."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.sink = Sink()
        self.conns: list[Conn] = []
        self._keepalive = asyncio.ensure_future(self._ping_loop())

    async def _ping_loop(self) -> None:
        """Each SignalR connection pings every 15 s (the official client's keep-alive), phases spread evenly.

        300 phases, one every 50 ms: independent clients' pings arrive spread out, not 1/30 of all the connections
        at once every 0.5 s (the load generator's artifact: at 10,000 connections, bursts of 333 pings that a
        server handles in one event-loop turn).
        """
        if self.protocol == "sio":
            return  # the Socket.IO server pings; readers answer
        slices, tick = 300, 0
        while True:  # bounded by close(), which cancels it
            await asyncio.sleep(15 / slices)
            tick = (tick + 1) % slices
            for conn in self.conns[tick::slices]:
                try:
                    await conn.ws.send(PING)
                except Exception:
                    continue

    async def add(self, base: str, path: str, count: int, query: Callable[[int], str] | None = None) -> float:
        """Open ``count`` more connections (200 handshakes in flight); return handshakes per second."""
        limit = asyncio.Semaphore(200)
        first = len(self.conns)

        async def one(index: int) -> Conn:
            async with limit:
                return await open_conn(base, path, self.protocol, index, self.sink, query(index) if query else "")

        started = time.perf_counter()
        opened = await asyncio.gather(*(one(first + i) for i in range(count)), return_exceptions=True)
        elapsed = time.perf_counter() - started
        failures = [item for item in opened if isinstance(item, BaseException)]
        self.conns.extend(item for item in opened if isinstance(item, Conn))
        if failures:
            raise RuntimeError(f"{len(failures)} of {count} connections failed: {failures[0]!r}")
        return count / elapsed

    def close(self) -> None:
        """Abort every connection."""
        self._keepalive.cancel()
        for conn in self.conns:
            conn.abort()
        self.conns.clear()


async def open_loop(rate: float, count: int, fire: Callable[[int, int], Awaitable[None]]) -> None:
    """Call ``fire(i, scheduled_ns)`` for ``i < count`` at ``rate``/s on an absolute timeline (late means late)."""
    period = 1e9 / rate
    start = time.monotonic_ns() + 2_000_000
    i = 0
    while i < count:
        now = time.monotonic_ns()
        while i < count:
            scheduled = start + int(i * period)
            if scheduled > now:
                break
            await fire(i, scheduled)
            i += 1
        if i < count:
            await asyncio.sleep(max(0.0, (start + int(i * period) - time.monotonic_ns()) / 1e9))


def self_cpu() -> float:
    """CPU seconds of this (load generator) process."""
    return cpu_seconds(os.getpid())
