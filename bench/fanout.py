"""Broadcast to one group on a real daphne (or uvicorn) process: deliveries per second and server CPU.

    .venv/bin/python bench/fanout.py [--clients 200] [--sends 300] [--server daphne|uvicorn]

The server is pinned to core 0 and this load generator to core 1 (when the machine has two).
Clients are raw WebSocket clients speaking the JSON hub protocol; each joins the group
"bench", then one extra connection fires ``SendToGroup`` without waiting, ``--sends`` times,
and the clock stops when every client has received every message. By default each send is its own
frame; ``--burst`` puts them all in one frame, which lets the server batch records per socket. Results go to
bench/results/fanout-<server>.json. Only loopback addresses are used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from tests.live import ServerProcess  # noqa: E402

RS = "\x1e"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _client(
    url: str, expected: int, done: asyncio.Event, counts: list[int], index: int
) -> tuple[ClientConnection, asyncio.Future[None]]:
    ws = await connect(url, compression=None, max_queue=None, open_timeout=30)
    await ws.send('{"protocol":"json","version":1}' + RS)
    await ws.recv()
    await ws.send(json.dumps({"type": 1, "target": "JoinGroup", "arguments": ["bench"], "invocationId": "j"}) + RS)
    await ws.recv()

    async def reader() -> None:
        while counts[index] < expected:
            frame = await ws.recv()
            counts[index] += str(frame).count('"target":"Receive"')
        done.set()

    return ws, asyncio.ensure_future(reader())


async def run(server: ServerProcess, clients: int, sends: int, burst: bool) -> dict[str, object]:
    url = server.ws_url + "/interop"
    counts = [0] * clients
    events = [asyncio.Event() for _ in range(clients)]
    limit = asyncio.Semaphore(50)

    async def make(index: int) -> tuple[ClientConnection, asyncio.Future[None]]:
        async with limit:
            return await _client(url, sends, events[index], counts, index)

    members = await asyncio.gather(*(make(i) for i in range(clients)))
    trigger = await connect(url, compression=None)
    await trigger.send('{"protocol":"json","version":1}' + RS)
    await trigger.recv()
    cpu_before = _cpu_seconds(server.process.pid)
    started = time.perf_counter()
    records = [
        json.dumps({"type": 1, "target": "SendToGroup", "arguments": ["bench", f"message {i}"]}) + RS
        for i in range(sends)
    ]
    if burst:
        await trigger.send("".join(records))  # one frame: the server may batch deliveries
    else:
        for record in records:  # one frame per send, back to back
            await trigger.send(record)
    await asyncio.wait_for(asyncio.gather(*(event.wait() for event in events)), timeout=120)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(server.process.pid) - cpu_before
    await trigger.close()
    for ws, task in members:
        task.cancel()
        await ws.close()
    deliveries = clients * sends
    return {
        "clients": clients,
        "sends": sends,
        "deliveries": deliveries,
        "delivered": sum(counts),
        "seconds": round(elapsed, 3),
        "deliveries_per_second": round(deliveries / elapsed),
        "server_cpu_seconds": round(cpu, 3),
        "server_cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--sends", type=int, default=300)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument("--burst", action="store_true", help="send all invocations in one frame")
    args = parser.parse_args()
    two_cores = (os.cpu_count() or 1) >= 2
    workdir = Path(tempfile.mkdtemp(prefix="signalr-bench-"))
    server = ServerProcess(workdir / "server.log", str(workdir / "bench.sqlite3"), server=args.server)
    try:
        if two_cores:
            os.sched_setaffinity(server.process.pid, {0})
            os.sched_setaffinity(0, {1})
        result = asyncio.run(run(server, args.clients, args.sends, args.burst))
    finally:
        server.stop()
    result["server"] = args.server
    result["pinned"] = two_cores
    result["mode"] = "burst" if args.burst else "frame-per-send"
    out = ROOT / "bench" / "results" / f"fanout-{args.server}-{result['mode']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
