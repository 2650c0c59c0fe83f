"""The harness of the scenarios: sizes, servers and connections of one implementation, and one open-loop step.

Every step: open-loop sends for a fixed time, a bounded drain, then the delivery ratio, delivered/s,
latency percentiles (per delivery and per send's last recipient), server CPU per delivery (schedstat) and
the load generator's own CPU (``client_bound`` when above 85% of its core).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench import lagprobe
from bench.client import Conn, Pool, open_loop, percentile, self_cpu
from bench.procs import IMPLS, Process, start_server

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
    # The one-record-per-frame steps (S3 at 1,000 and 4,000 members): each lasts a whole keep-alive cycle (15 s:
    # every server's pings to and from its idle connections come in bursts, wherever the connects and joins put
    # them), after as long a window without sends that measures the server's background CPU (see Bench.step).
    per_frame_seconds: float = 15.0
    background_seconds: float = 15.0
    transport_group_size: int = 1000
    transport_join_rate: int = 1000
    steady_conns: int = 10000
    steady_group_size: int = 1000
    steady_rate: float = 4.0  # sends/s to the group: 4,000 deliveries/s
    steady_seconds: float = 20.0
    steady_close_wait_seconds: float = 3.0
    steady_free_limit_seconds: float = 30.0  # the leak check waits up to this long for the objects to be freed


def full_sizes() -> Sizes:
    """The full suite (about 30 minutes on 2 cores)."""
    return Sizes()


def quick_sizes() -> Sizes:
    """CI smoke run: tiny sizes, low rates (delivery must be complete), about 2.5 minutes."""
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
        per_frame_seconds=0.3,
        background_seconds=0.3,
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
        background: float = 0.0,
    ) -> dict[str, Any]:
        """One open-loop step: ``fire(seq, scheduled_ns, i)`` ``rate`` times a second; ``recipients(i)`` each.

        ``background`` (seconds): first measure the servers' CPU with no sends for that long (keep-alive, timers,
        the loop-lag probe: what the open connections cost anyway), and report the step's CPU per delivery net of
        it too, ``server_cpu_us_per_delivery_net``: the cost of the deliveries themselves.
        """
        sizes = self.sizes
        background_cores = None
        if background > 0:
            cpu_idle, idle_started = self.server_cpu(), time.monotonic()
            await asyncio.sleep(background)
            background_cores = (self.server_cpu() - cpu_idle) / (time.monotonic() - idle_started)
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
        if background_cores is not None:
            net = cpu - background_cores * (finished - started)
            result["server_background_cores"] = round(background_cores, 4)
            result["server_cpu_us_per_delivery_net"] = round(net / sink.count * 1e6, 2) if sink.count else None
        if track_pairs and sink.pairs is not None:
            result["_pairs"] = sink.pairs
        self._lag_windows.append((result, started, finished))
        return result

    async def fill_loop_lag(self) -> list[tuple[float, float, float]]:
        """Set each step's ``loop_lag`` from the servers' probes (bench/lagprobe.py), once they flushed past it.

        ``loop_lag``: ``max_ms`` (the worst lateness of the probe's 5 ms timer in the step, from the first send to
        the end of the drain; 0 when no wake-up was over 5 ms late), ``over_20ms`` and ``over_10ms`` (how many
        wake-ups were that late; one stall counts once). Only for servers with a probe (not the Node ones); over
        all the servers of the step (scale-out). Returns every server's stall events (monotonic s, ms, CPU ms).
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
