"""The scenarios (performance-anchors.md §7): each runs one implementation against fresh server processes.

Every step: open-loop sends for a fixed time, a bounded drain, then the delivery ratio, delivered/s,
latency percentiles (per delivery and per send's last recipient), server CPU per delivery (procfs) and
the load generator's own CPU (``client_bound`` when above 85% of its core).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import lagprobe
from bench.client import Conn, Pool, open_loop, payload, percentile, self_cpu
from bench.procs import IMPLS, Process, start_server
from bench.transports import VARIANTS, Members

CLIENT_BOUND = 0.85


@dataclass
class Sizes:
    """Scenario sizes: the full suite or the CI smoke run."""

    step_seconds: float = 1.5
    warmup_seconds: float = 0.5
    drain_seconds: float = 4.0
    echo_conns: int = 200
    echo_rates: tuple[int, ...] = (1000, 2000, 4000)
    broadcast_conns: int = 1000
    broadcast_rates: tuple[int, ...] = (5, 10, 20, 40)
    group_sizes: tuple[int, ...] = (10, 100, 1000, 4000)
    group_deliveries_per_s: int = 4000
    group_max_rate: int = 40
    user_devices: tuple[int, ...] = (1, 5, 20)
    users: int = 100
    user_rates: tuple[int, ...] = (100, 500)
    user_other_rates: tuple[int, ...] = (500,)
    churn_conns: int = 500
    churn_groups: int = 50
    churn_rates: tuple[int, ...] = (500, 1000, 2000)
    idle_plateaus: tuple[int, ...] = (2000, 10000)
    idle_window_seconds: float = 15.0  # one whole keep-alive cycle (pings every 15 s each way)
    idle_pause_seconds: float = 1.0
    scaleout_conns: int = 1000
    scaleout_rates: tuple[int, ...] = (5, 10, 20)
    revocation_rounds: int = 50
    settle_sample_seconds: float = 0.3
    transport_group_size: int = 1000
    transport_join_rate: int = 1000
    steady_conns: int = 10000
    steady_group_size: int = 1000
    steady_rate: float = 4.0  # sends/s to the group: 4,000 deliveries/s
    steady_seconds: float = 20.0
    steady_close_wait_seconds: float = 3.0
    steady_free_limit_seconds: float = 30.0  # the leak check waits up to this long for the objects to be freed


def full_sizes() -> Sizes:
    """The full suite (< 10 minutes on 2 cores)."""
    return Sizes()


def quick_sizes() -> Sizes:
    """CI smoke run: tiny sizes, low rates (delivery must be complete), < 60 s."""
    return Sizes(
        step_seconds=0.3,
        warmup_seconds=0.05,
        settle_sample_seconds=0.1,
        drain_seconds=5.0,
        echo_conns=10,
        echo_rates=(100,),
        broadcast_conns=20,
        broadcast_rates=(10,),
        group_sizes=(5, 20),
        group_deliveries_per_s=400,
        group_max_rate=0,
        user_devices=(1, 3),
        users=5,
        user_rates=(50,),
        user_other_rates=(50,),
        churn_conns=20,
        churn_groups=5,
        churn_rates=(100,),
        idle_plateaus=(50,),
        idle_window_seconds=0.5,
        idle_pause_seconds=0.2,
        scaleout_conns=20,
        scaleout_rates=(10,),
        revocation_rounds=3,
        transport_group_size=20,
        transport_join_rate=200,
        steady_conns=200,
        steady_group_size=50,
        steady_seconds=1.0,
        steady_close_wait_seconds=0.5,
        steady_free_limit_seconds=10.0,
    )


class Bench:
    """Servers and client connections of one implementation for one scenario."""

    def __init__(self, impl: str, sizes: Sizes, layer: str = "memory", redis_url: str = "", servers: int = 1):
        kind, self.path, self.protocol = IMPLS[impl]
        self.impl, self.sizes = impl, sizes
        self.procs: list[Process] = []
        try:
            for _ in range(servers):
                self.procs.append(start_server(kind, layer, redis_url))
        except BaseException:
            self.stop()
            raise
        self.bases = [f"ws://127.0.0.1:{proc.port}" for proc in self.procs]
        self.pool = Pool(self.protocol)
        self.next_seq = 1
        self._lag_windows: list[tuple[dict[str, Any], float, float]] = []  # steps whose loop_lag is still to fill

    def stop(self) -> None:
        """Abort the connections and stop the servers (by PID)."""
        if hasattr(self, "pool"):
            self.pool.close()
        for proc in self.procs:
            proc.stop()

    @property
    def conns(self) -> list[Conn]:
        """The open connections, in order."""
        return self.pool.conns

    async def connect(self, count: int, query: Callable[[int], str] | None = None, server: int = 0) -> float:
        """Open ``count`` connections to server ``server``; handshakes per second. Then let the server settle."""
        rate = await self.pool.add(self.bases[server], self.path, count, query)
        await self.settle(5.0)
        return rate

    def server_cpu(self) -> float:
        """CPU seconds of all server processes."""
        return sum(proc.cpu() for proc in self.procs)

    def check_alive(self) -> None:
        """Fail loudly when a server died."""
        for proc in self.procs:
            if not proc.alive():
                raise RuntimeError(f"{self.impl}: server exited:\n{proc.log_tail()}")

    async def settle(self, limit: float = 4.0) -> None:
        """Wait (bounded) until the servers are nearly idle: the backlog of a saturated step is gone."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before, sample = self.server_cpu(), self.sizes.settle_sample_seconds
            await asyncio.sleep(sample)
            if (self.server_cpu() - before) / sample < 0.15:
                return

    async def step(
        self,
        rate: float,
        fire: Callable[[int, int, int], Awaitable[None]],
        recipients: Callable[[int], int],
        *,
        seconds: float | None = None,
        track_pairs: bool = False,
        drain: float | None = None,
        label: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One open-loop step: ``fire(seq, scheduled_ns, i)`` ``rate`` times a second; ``recipients(i)`` each."""
        sizes = self.sizes
        count = max(1, round(rate * (seconds or sizes.step_seconds)))
        warm = min(count - 1, int(rate * sizes.warmup_seconds))
        first = self.next_seq
        self.next_seq += count
        sink = self.pool.sink
        sink.reset(first, first + count, first + warm, track_pairs)
        expected = sum(recipients(i) for i in range(count))
        cpu_before, client_before = self.server_cpu(), self_cpu()
        started = time.monotonic()

        async def send(i: int, scheduled: int) -> None:
            await fire(first + i, scheduled, i)

        await open_loop(rate, count, send)
        sent = time.monotonic()
        last, last_change = -1, sent
        while sink.count < expected and time.monotonic() - sent < (drain or sizes.drain_seconds):
            await asyncio.sleep(0.02)
            if sink.count != last:
                last, last_change = sink.count, time.monotonic()
            elif time.monotonic() - last_change > 1.5:
                break
        finished = time.monotonic()
        active_end = max(sent, sink.last_ns / 1e9) if sink.count else finished
        elapsed = max(1e-6, active_end - started)
        cpu = self.server_cpu() - cpu_before
        client = self_cpu() - client_before
        latencies = sorted(sink.latencies)
        complete = sorted(entry[1] for seq, entry in sink.per_send.items() if entry[0] >= recipients(seq - first))
        self.check_alive()
        result: dict[str, Any] = {
            **(label or {}),
            "offered_per_s": rate,
            "offered_deliveries_per_s": round(expected / max(1e-6, sent - started)),
            "sends": count,
            "expected": expected,
            "delivered": sink.count,
            "ratio": round(sink.count / expected, 5) if expected else 1.0,
            "delivered_per_s": round(sink.count / elapsed),
            "lat_ms": {
                name: round(percentile(latencies, q) / 1e6, 2)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
            },
            "fanout_ms": {
                "p50": round(percentile(complete, 0.5) / 1e6, 2),
                "p99": round(percentile(complete, 0.99) / 1e6, 2),
            },
            "server_cpu_cores": round(cpu / max(1e-6, finished - started), 3),
            "server_cpu_us_per_delivery": round(cpu / sink.count * 1e6, 2) if sink.count else None,
            "client_cpu_cores": round(client / max(1e-6, finished - started), 3),
            "client_bound": client / max(1e-6, finished - started) > CLIENT_BOUND,
            "stray": sink.stray,
        }
        if track_pairs and sink.pairs is not None:
            result["_pairs"] = sink.pairs
        self._lag_windows.append((result, started, finished))
        return result

    async def fill_loop_lag(self) -> list[tuple[float, float]]:
        """Set each step's ``loop_lag`` from the servers' probes (bench/lagprobe.py), once they flushed past it.

        ``loop_lag``: ``max_ms`` (the worst lateness of the probe's 5 ms timer in the step, from the first send to
        the end of the drain; 0 when no wake-up was over 5 ms late), ``over_20ms`` and ``over_10ms`` (how many
        wake-ups were that late; one stall counts once). Only for servers with a probe (not the Node ones); over
        all the servers of the step (scale-out). Returns every server's stall events (monotonic s, ms).
        """
        pending, self._lag_windows = self._lag_windows, []
        files = [proc.lag_file for proc in self.procs if proc.lag_file is not None]
        if not files:
            return []
        if pending:
            await lagprobe.wait_flushed(files, max(end for _, _, end in pending))
        states = [lagprobe.read(path) for path in files]
        if not any(running for running, _, _ in states):
            return []
        events = sorted(event for running, _, found in states if running for event in found)
        for result, start, end in pending:
            result["loop_lag"] = lagprobe.summary(events, start, end)
        return events


def constant(value: int) -> Callable[[int], int]:
    """``recipients`` for sends that all reach ``value`` connections."""
    return lambda i: value


def _user_query(first: int, devices: int) -> Callable[[int], str]:
    return lambda i: f"user=d{devices}-{(i - first) // devices}"


def saturated(step: dict[str, Any]) -> bool:
    """Lost messages or fell far behind the offered rate: stop stepping up."""
    return bool(step["ratio"] < 0.9 or step["delivered_per_s"] < 0.6 * step["offered_deliveries_per_s"])


async def _stepped(
    bench: Bench, rates: tuple[int, ...], make: Callable[[int], Awaitable[dict[str, Any]]]
) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for index, rate in enumerate(rates):
        step = await make(rate)
        steps.append(step)
        if saturated(step):
            step["saturated"] = True
            break
        if index < len(rates) - 1:
            await bench.settle()
    return steps


async def echo(bench: Bench) -> dict[str, Any]:
    """S1: open-loop RPC ``Echo`` invocations spread over the connections; completion latency."""
    sizes = bench.sizes
    await bench.connect(sizes.echo_conns)
    conns = bench.conns

    async def fire(seq: int, scheduled: int, i: int) -> None:
        await conns[i % len(conns)].call("Echo", payload(seq, scheduled), ack=True)

    return {"steps": await _stepped(bench, sizes.echo_rates, lambda rate: bench.step(rate, fire, lambda i: 1))}


async def broadcast(bench: Bench) -> dict[str, Any]:
    """S2: ``Broadcast`` (Clients.All / emit to all / group ``all``) to every connection, 4 senders."""
    sizes = bench.sizes
    await bench.connect(sizes.broadcast_conns, lambda i: "all=1")
    conns, n = bench.conns, len(bench.conns)

    async def fire(seq: int, scheduled: int, i: int) -> None:
        await conns[i % 4].call("Broadcast", payload(seq, scheduled))

    return {"steps": await _stepped(bench, sizes.broadcast_rates, lambda rate: bench.step(rate, fire, lambda i: n))}


async def _join_all(bench: Bench, members: list[tuple[int, str]], rate: int = 4000) -> dict[str, Any]:
    """Join (connection index, group) pairs open-loop with acks; the step is the join measurement."""
    conns = bench.conns

    async def fire(seq: int, scheduled: int, i: int) -> None:
        index, group = members[i]
        await conns[index].call("JoinGroup", group, payload(seq, scheduled), ack=True)

    return await bench.step(rate, fire, lambda i: 1, seconds=len(members) / rate)


async def groups(bench: Bench) -> dict[str, Any]:
    """S3: groups from small (10) to big (4000) at a fixed offered deliveries/s; then max throughput at 1000."""
    sizes = bench.sizes
    group_sizes = tuple(s for s in sizes.group_sizes if not (bench.impl == "channels-daphne" and s > 1000))
    await bench.connect(max(group_sizes))
    conns = bench.conns
    out: dict[str, Any] = {"steps": [], "joins": []}
    for size in group_sizes:
        count = max(1, min(100, 1000 // size, len(conns) // size)) if size < 1000 else 1
        names = [f"s{size}-{k}" for k in range(count)]
        joins = await _join_all(bench, [(index, names[index // size]) for index in range(count * size)])
        out["joins"].append({"size": size, "groups": count, **joins})
        rate = max(1.0, sizes.group_deliveries_per_s / size)

        async def fire(seq: int, scheduled: int, i: int, names: list[str] = names) -> None:
            await conns[i % 4].call("SendToGroup", names[i % len(names)], payload(seq, scheduled))

        seconds = max(sizes.step_seconds, 3 / rate)  # at least 3 sends to the biggest group
        step = await bench.step(
            rate, fire, constant(size), seconds=seconds, label={"group_size": size, "groups": count}
        )
        out["steps"].append(step)
        await bench.settle()
        if size == 1000 and sizes.group_max_rate:
            top = await bench.step(sizes.group_max_rate, fire, lambda i: 1000, label={"group_size": 1000, "max": True})
            out["max_1000"] = top
            await bench.settle()
    return out


async def users(bench: Bench) -> dict[str, Any]:
    """S4: ``SendToUser`` to users with 1, 5 and 20 devices; completion = the user's last device."""
    sizes = bench.sizes
    out: dict[str, Any] = {"steps": []}
    await bench.connect(4)  # senders, no user
    conns = bench.conns  # the pool's list: grows in place
    for devices in sizes.user_devices:
        first = len(bench.conns)
        await bench.connect(sizes.users * devices, _user_query(first, devices))

        async def fire(seq: int, scheduled: int, i: int, d: int = devices) -> None:
            await conns[i % 4].call("SendToUser", f"d{d}-{i % sizes.users}", payload(seq, scheduled))

        for rate in sizes.user_rates if devices == 5 else sizes.user_other_rates:
            step = await bench.step(rate, fire, constant(devices), track_pairs=True, label={"devices": devices})
            pairs = step.pop("_pairs", {})
            step["duplicates"] = sum(1 for value in pairs.values() if value > 1)
            out["steps"].append(step)
            await bench.settle()
    return out


async def churn(bench: Bench) -> dict[str, Any]:
    """S5: JoinGroup/LeaveGroup toggles over 50 groups, open-loop with acks; then every group is probed."""
    sizes = bench.sizes
    await bench.connect(sizes.churn_conns)
    conns, n, g = bench.conns, sizes.churn_conns, sizes.churn_groups
    members: set[tuple[int, int]] = set()
    offset = 0
    out: dict[str, Any] = {"steps": []}
    for rate in sizes.churn_rates:

        async def fire(seq: int, scheduled: int, i: int, base: int = offset) -> None:
            k = base + i
            conn, group = k % n, (k + 7 * (k // n)) % g  # a (conn, group) pair recurs only after g ops on that conn
            if (conn, group) in members:
                members.discard((conn, group))
                await conns[conn].call("LeaveGroup", f"c{group}", payload(seq, scheduled), ack=True)
            else:
                members.add((conn, group))
                await conns[conn].call("JoinGroup", f"c{group}", payload(seq, scheduled), ack=True)

        step = await bench.step(rate, fire, lambda i: 1)
        offset += step["sends"]
        out["steps"].append(step)
        await bench.settle()
    sizes_by_group = [sum(1 for conn, group in members if group == k) for k in range(g)]

    async def probe(seq: int, scheduled: int, i: int) -> None:
        await conns[0].call("SendToGroup", f"c{i}", payload(seq, scheduled))

    check = await bench.step(200, probe, lambda i: sizes_by_group[i], seconds=g / 200, track_pairs=True, drain=30.0)
    pairs = check.pop("_pairs", {})
    first = bench.next_seq - g
    got = {(conn, seq - first) for (conn, seq), times in pairs.items() if times == 1}
    out["membership"] = {
        "expected_pairs": len(members),
        "received_pairs": len(pairs),
        "duplicates": sum(1 for times in pairs.values() if times > 1),
        "missing": len(members - got),
        "unexpected": len(got - members),
        "ok": got == members and all(times == 1 for times in pairs.values()),
    }
    return out


async def idle(bench: Bench) -> dict[str, Any]:
    """S6: connect rate, then RSS per connection and CPU with idle connections (keep-alive pings flowing)."""
    sizes = bench.sizes
    await bench.connect(10)
    await asyncio.sleep(sizes.idle_pause_seconds)
    proc = bench.procs[0]
    base_rss = proc.rss()
    plateaus = []
    for target in sizes.idle_plateaus:
        rate = await bench.connect(target - (len(bench.conns) - 10))
        await asyncio.sleep(sizes.idle_pause_seconds)
        cpu_before, started = proc.cpu(), time.monotonic()
        await asyncio.sleep(
            sizes.idle_window_seconds if target == sizes.idle_plateaus[-1] else sizes.idle_window_seconds / 5
        )
        cpu = (proc.cpu() - cpu_before) / (time.monotonic() - started)
        rss = proc.rss()
        bench.check_alive()
        connections = len(bench.conns) - 10
        plateaus.append(
            {
                "connections": connections,
                "connects_per_s": round(rate),
                "rss_mib": round(rss / 1024, 1),
                "kib_per_conn": round((rss - base_rss) / connections, 2),
                "idle_cpu_percent_of_core": round(cpu * 100, 2),
            }
        )
    return {"plateaus": plateaus, "base_rss_mib": round(base_rss / 1024, 1)}


async def scaleout(bench: Bench) -> dict[str, Any]:
    """S7: two server processes on one Redis; a 1,000-member group split over both, senders on the first."""
    sizes = bench.sizes
    half = sizes.scaleout_conns // 2
    await bench.connect(half, server=0)
    await bench.connect(sizes.scaleout_conns - half, server=1)
    tag = f"big-{bench.impl}-{time.monotonic_ns()}"
    joins = await _join_all(bench, [(index, tag) for index in range(sizes.scaleout_conns)], rate=2000)
    conns, n = bench.conns, sizes.scaleout_conns

    async def fire(seq: int, scheduled: int, i: int) -> None:
        await conns[i % 4].call("SendToGroup", tag, payload(seq, scheduled))

    steps = await _stepped(bench, sizes.scaleout_rates, lambda rate: bench.step(rate, fire, lambda i: n))
    return {"steps": steps, "joins": joins}


async def transports(bench: Bench) -> dict[str, Any]:
    """S8: server CPU per delivery on one 1,000-member group, per transport and hub protocol, in one server process.

    Each variant (bench/transports.py: WebSockets with JSON, the baseline, and with MessagePack; Server-Sent
    Events; long polling with JSON and with MessagePack) gets its own 1,000 members, which join a group of their
    own; then the step of S3 at 1,000 members (``group_deliveries_per_s / size`` sends/s, from the same 4 WebSocket
    JSON senders, for ``max(step_seconds, 3 / rate)``: 6 sends) measures it; then the members end and the server
    settles before the next variant. A delivery is one record carrying the payload, whatever the framing.
    """
    sizes = bench.sizes
    size = sizes.transport_group_size
    await bench.connect(4)  # the senders (WebSocket, JSON), in no group
    senders = bench.conns[:4]
    out: dict[str, Any] = {"steps": [], "joins": [], "connects": []}
    next_index = len(bench.conns)
    for transport, protocol in VARIANTS:
        variant = f"{transport}/{protocol}"
        label = {"variant": variant, "transport": transport, "protocol": protocol, "group_size": size}
        members = Members(transport, protocol, bench.bases[0], bench.path, bench.pool.sink)
        try:
            rate_open = await members.add(size, next_index)
            next_index += size
            await bench.settle(5.0)
            out["connects"].append({**label, "connects_per_s": round(rate_open)})
            conns = members.conns
            group = f"t-{transport}-{protocol}"

            async def join(seq: int, scheduled: int, i: int, conns: list[Any] = conns, group: str = group) -> None:
                await conns[i].call("JoinGroup", group, payload(seq, scheduled), ack=True)

            joins = await bench.step(
                sizes.transport_join_rate,
                join,
                constant(1),
                seconds=size / sizes.transport_join_rate,
                drain=30.0,
                label={**label, "size": size},
            )
            out["joins"].append(joins)
            if joins["ratio"] < 1:
                raise RuntimeError(f"{variant}: {joins['delivered']} of {size} joins completed: {members.errors()[:3]}")
            await bench.settle()
            rate = max(1.0, sizes.group_deliveries_per_s / size)

            async def fire(seq: int, scheduled: int, i: int, group: str = group) -> None:
                await senders[i % 4].call("SendToGroup", group, payload(seq, scheduled))

            seconds = max(sizes.step_seconds, 3 / rate)  # as S3: at least 3 sends
            polls = members.polls()
            step = await bench.step(rate, fire, constant(size), seconds=seconds, track_pairs=True, label=label)
            pairs = step.pop("_pairs", {})
            step["duplicates"] = sum(1 for value in pairs.values() if value > 1)
            if transport == "LongPolling":  # > 1: messages queued between two polls of a member
                answered = members.polls() - polls
                step["polls_answered"] = answered
                step["deliveries_per_poll"] = round(step["delivered"] / answered, 2) if answered else None
            step["client_errors"] = members.errors()[:5]
            if saturated(step):
                step["saturated"] = True
            out["steps"].append(step)
        finally:
            await members.close()
        await bench.settle()
    base = next((s for s in out["steps"] if s["variant"] == "WebSockets/json"), None)
    base_cpu = base["server_cpu_us_per_delivery"] if base else None
    for step in out["steps"]:
        cpu = step["server_cpu_us_per_delivery"]
        step["cpu_vs_ws_json"] = round(cpu / base_cpu, 2) if cpu and base_cpu else None
    return out


def _objects(counts: dict[str, Any]) -> int:
    """Objects the collector tracks, frozen ones included (a gc.freeze() must not hide a leak)."""
    return int(counts["tracked_objects"]) + int(counts.get("gc_frozen") or 0)


async def steady(bench: Bench) -> dict[str, Any]:
    """Steady fan-out at 10,000 connections (issue 15): event-loop stalls, CPU per delivery, then the leak check.

    4 senders (in no group) and 10,000 connections to one server; 1,000 of them join one group, which gets 4 sends/s
    (4,000 deliveries/s) for 20 s while the other 9,000 idle (keep-alive pings both ways). The loop lag comes from
    the server's probe (bench/lagprobe.py: its 5 ms timer's lateness, the stalls themselves, not a latency
    percentile). Then the 10,000 close, half with a closing handshake and half dropped (TCP abort); the server
    settles, and a ``gc.collect()`` through the probe counts the GC-tracked objects against the count taken before
    they connected: ``leak_per_conn`` = the difference / 10,000, about 0 when closed connections are freed. A server
    may hold a closed connection's objects for a while (the hub: about 5 s), so the count is taken again every 3 s
    until it is under 1 per connection, up to 30 s after closing (``checks``: [seconds after closing, per connection]).
    """
    sizes = bench.sizes
    proc = bench.procs[0]
    await bench.connect(4)
    senders = bench.conns[:4]
    await bench.settle()
    before = await lagprobe.request_gc(proc.lag_file) if proc.lag_file else None
    rss = {"before": proc.rss()}
    rate_open = await bench.connect(sizes.steady_conns)
    rss["connected"] = proc.rss()
    group, size = "steady", sizes.steady_group_size
    joins = await _join_all(bench, [(4 + index, group) for index in range(size)])
    await bench.settle()

    async def fire(seq: int, scheduled: int, i: int) -> None:
        await senders[i % 4].call("SendToGroup", group, payload(seq, scheduled))

    started = time.monotonic()
    step = await bench.step(
        sizes.steady_rate,
        fire,
        constant(size),
        seconds=sizes.steady_seconds,
        label={"connections": sizes.steady_conns, "group_size": size},
    )
    ended = time.monotonic()
    rss["after_step"] = proc.rss()
    events = await bench.fill_loop_lag()
    pauses = lagprobe.gc_pauses(proc.lag_file) if proc.lag_file else []
    closing = bench.conns[4:]
    del bench.conns[4:]  # the pool's list: its keep-alive pings only the senders from now on
    for conn in closing[1::2]:
        conn.abort()
    limit = asyncio.Semaphore(200)

    async def close(conn: Conn) -> None:
        async with limit:
            try:
                await asyncio.wait_for(conn.ws.close(), 10)
            except Exception:  # no closing handshake in time: drop it
                conn.abort()

    await asyncio.gather(*(close(conn) for conn in closing[0::2]))
    closed = time.monotonic()
    await bench.settle()
    await asyncio.sleep(sizes.steady_close_wait_seconds)
    after = await lagprobe.request_gc(proc.lag_file) if proc.lag_file else None
    checks: list[list[float]] = []  # [seconds after closing, objects per closed connection]
    while before and after:  # a server may free a closed connection's objects a while later: until < 1 or 30 s
        checks.append([round(time.monotonic() - closed, 1), (_objects(after) - _objects(before)) / len(closing)])
        if checks[-1][1] < 1 or time.monotonic() - closed > sizes.steady_free_limit_seconds:
            break
        await asyncio.sleep(3.0)
        after = await lagprobe.request_gc(proc.lag_file) if proc.lag_file else None
    rss["after_close"] = proc.rss()
    bench.check_alive()
    objects = None
    if before and after:
        objects = {
            "before": _objects(before),
            "after_close": _objects(after),
            "closed": len(closing),
            "leak_per_conn": round((_objects(after) - _objects(before)) / len(closing), 3),
            "checks": [[at, round(per_conn, 2)] for at, per_conn in checks],
            "collect_ms": [before["collect_ms"], after["collect_ms"]],
            "gc_garbage": after["gc_garbage"],
            "gc_frozen": after["gc_frozen"],
            # the types that grew most (count after closing - before connecting)
            "grown_types": dict(
                sorted(
                    ((name, count - before["by_type"].get(name, 0)) for name, count in after["by_type"].items()),
                    key=lambda item: -item[1],
                )[:12]
            ),
        }
    return {
        "steps": [step],
        "joins": joins,
        "connections": sizes.steady_conns,
        "group_size": size,
        "connects_per_s": round(rate_open),
        "loop_lag": step.get("loop_lag"),
        "lag_events": [[round(at - started, 3), lag] for at, lag in events if started <= at <= ended],
        # garbage collections over 5 ms in the step: [seconds into it, ms, generation]
        "gc_pauses": [[round(at - started, 3), ms, gen] for at, ms, gen in pauses if started <= at <= ended],
        "objects": objects,
        "rss_mib": {key: round(value / 1024, 1) for key, value in rss.items()},
    }


SCENARIOS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "echo": echo,
    "broadcast": broadcast,
    "groups": groups,
    "users": users,
    "churn": churn,
    "idle": idle,
    "scaleout": scaleout,
    "transports": transports,
    "steady": steady,
}
