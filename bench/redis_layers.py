"""RedisChannelLayer against RedisPubSubChannelLayer, for signalr_groups' own traffic across two processes.

``.venv/bin/python bench/redis_layers.py [--quick]`` starts a redis-server on a free loopback port and,
for each layer, a *receiver* process holding a hub group of 50 connections and a user with 5 devices
(stand-in connections: this measures the layer path, not sockets), while this process sends:

- group sends and user sends at a fixed rate (open loop, the send time in the payload): delivery
  ratio and p50/p99 latency from send to delivery in the other process;
- group sends as fast as the sender can go: sends/s delivered to the other process;
- joins: one connection joining and leaving new groups (one layer ``group_add`` + ``group_discard``
  each), pairs/s.

Results go to ``bench/results/redis_layers.json``. Every process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signalr_groups.protocol.serialized import SerializedInvocation

ROOT = Path(__file__).resolve().parent.parent
HUB = "bench-layers"
GROUP_MEMBERS = 50
USER_DEVICES = 5
LAYERS = ("core", "pubsub")


def _setup_django(url: str, kind: str) -> None:
    import django
    from django.conf import settings

    sys.path.insert(0, str(ROOT))
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "channels", "signalr_groups"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        SIGNALR_GROUPS={"REDIS_URL": url, "REDIS_LAYER": kind},
        USE_TZ=True,
    )
    django.setup()


class _Member:
    """A stand-in connection: counts deliveries; the first member of each kind also records latency."""

    def __init__(self, connection_id: str, user: str | None, sample: list[float] | None, counter: list[int]) -> None:
        self.connection_id = connection_id
        self.user_identifier = user
        from signalr_groups.auth.credentials import Credentials  # Django is set up in the worker process
        from tests.fakes import FakeHub

        self.credentials = Credentials()
        self.hub = FakeHub
        self.client_address: str | None = None
        self._sample = sample
        self._counter = counter

    def deliver(self, message: SerializedInvocation) -> None:
        self._counter[0] += 1
        if self._sample is not None:
            sent = json.loads(message.json.rstrip("\x1e"))["arguments"][0]
            self._sample.append(time.time() - sent)

    def tick(self, now: float) -> None:
        """No keep-alive needed for a stand-in."""

    def notify_hub(self, event: str, *args: Any) -> None:
        """No hub behind a stand-in."""

    async def invoke_client(self, target: str, arguments: list[Any], timeout: float) -> Any:
        """A stand-in has no client to ask."""
        raise NotImplementedError

    def abort(self, error: str | None = None, allow_reconnect: bool | None = None) -> None:
        """Nothing to close."""


async def _receiver_main(pipe: Connection) -> None:
    from signalr_groups.lifetime.managers import get_manager

    manager = get_manager(HUB, create=True)
    assert manager is not None
    group_latency: list[float] = []
    user_latency: list[float] = []
    group_count, user_count = [0], [0]
    members = [_Member(f"g{n}", None, group_latency if n == 0 else None, group_count) for n in range(GROUP_MEMBERS)]
    devices = [_Member(f"u{n}", "u", user_latency if n == 0 else None, user_count) for n in range(USER_DEVICES)]
    for member in [*members, *devices]:
        await manager.connect(member)
    for member in members:
        await manager.add_local(member.connection_id, "g")
    loop = asyncio.get_running_loop()
    pipe.send("ready")
    while True:
        command = await loop.run_in_executor(None, pipe.recv)
        if command == "reset":
            group_latency.clear()
            user_latency.clear()
            group_count[0] = user_count[0] = 0
            pipe.send("ok")
        elif command == "report":
            pipe.send(
                {
                    "group_deliveries": group_count[0],
                    "user_deliveries": user_count[0],
                    "group_latency": list(group_latency),
                    "user_latency": list(user_latency),
                }
            )
        elif isinstance(command, tuple) and command[0] == "joins":
            count = command[1]
            started = time.perf_counter()
            for n in range(count):
                await manager.add_local("g0", f"churn-{n}")
                await manager.remove_local("g0", f"churn-{n}")
            pipe.send(count / (time.perf_counter() - started))
        elif command == "stop":
            for member in [*members, *devices]:
                await manager.disconnect(member)
            pipe.send("stopped")
            return


def _receiver(pipe: Connection, url: str, kind: str) -> None:
    _setup_django(url, kind)
    asyncio.run(_receiver_main(pipe))


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _open_loop(kind: str, rate: int, seconds: float) -> int:
    """Send at ``rate`` per second for ``seconds`` (each send at its scheduled time); return how many."""
    from signalr_groups.addressing import Address
    from signalr_groups.lifetime.sending import send

    address = Address("groups", ("g",)) if kind == "group" else Address("users", ("u",))
    total = int(rate * seconds)
    start = time.perf_counter()
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(HUB, address, "T", [time.time(), n])
    return total


async def _as_fast_as_possible(seconds: float) -> int:
    from signalr_groups.addressing import Address
    from signalr_groups.lifetime.sending import send

    address = Address("groups", ("g",))
    sent = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        await send(HUB, address, "T", [time.time(), sent])
        sent += 1
    return sent


def _ask(pipe: Connection, command: Any, timeout: float = 60) -> Any:
    pipe.send(command)
    if not pipe.poll(timeout):
        raise RuntimeError(f"the receiver did not answer {command!r}")
    return pipe.recv()


def _settle(pipe: Connection, expected_group: int, expected_user: int, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        report: dict[str, Any] = _ask(pipe, "report")
        done = report["group_deliveries"] >= expected_group and report["user_deliveries"] >= expected_user
        if done or time.monotonic() > deadline:
            return report
        time.sleep(0.1)


def _measure(url: str, kind: str, quick: bool) -> dict[str, Any]:
    _setup_django(url, kind)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    receiver = context.Process(target=_receiver, args=(child, url, kind), daemon=True)
    receiver.start()
    try:
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("the receiver did not start")
        seconds = 1.0 if quick else 4.0
        result: dict[str, Any] = {"layer": kind}
        for target, rate in (("group", 500), ("user", 500), ("group", 2000)):
            _ask(parent, "reset")
            sent = asyncio.run(_open_loop(target, rate, seconds))
            per_send = GROUP_MEMBERS if target == "group" else USER_DEVICES
            report = _settle(
                parent, sent * per_send if target == "group" else 0, sent * per_send if target == "user" else 0
            )
            delivered = report[f"{target}_deliveries"]
            latency = report[f"{target}_latency"]
            result[f"{target}_{rate}_per_s"] = {
                "sent": sent,
                "delivery_ratio": delivered / (sent * per_send),
                "p50_ms": round(1000 * _percentile(latency, 0.50), 2),
                "p99_ms": round(1000 * _percentile(latency, 0.99), 2),
            }
        _ask(parent, "reset")
        started = time.perf_counter()
        sent = asyncio.run(_as_fast_as_possible(seconds))
        report = _settle(parent, sent * GROUP_MEMBERS, 0, timeout=60)
        elapsed = time.perf_counter() - started
        result["group_max"] = {
            "sent": sent,
            "delivery_ratio": report["group_deliveries"] / (sent * GROUP_MEMBERS),
            "sends_per_s_delivered": round(report["group_deliveries"] / GROUP_MEMBERS / elapsed),
            "p50_ms": round(1000 * _percentile(report["group_latency"], 0.50), 2),
            "p99_ms": round(1000 * _percentile(report["group_latency"], 0.99), 2),
        }
        result["join_leave_pairs_per_s"] = round(_ask(parent, ("joins", 200 if quick else 1000)))
        _ask(parent, "stop")
        return result
    finally:
        receiver.join(10)
        if receiver.is_alive():
            receiver.kill()


def main() -> None:
    """Run both layers (in a fresh interpreter each) and print and save the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s per step instead of 4 s")
    parser.add_argument("--layer", choices=LAYERS, help=argparse.SUPPRESS)  # internal: one layer, JSON out
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.layer:
        print(json.dumps(_measure(args.url, args.layer, args.quick)))
        return
    sys.path.insert(0, str(ROOT))  # run as a script: make the bench package importable
    from bench.procs import start_redis

    redis = start_redis()
    url = f"redis://127.0.0.1:{redis.port}/0"
    results = []
    try:
        for kind in LAYERS:
            command = [sys.executable, __file__, "--layer", kind, "--url", url, *(["--quick"] if args.quick else [])]
            output = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        redis.stop()
    out = ROOT / "bench" / "results" / "redis_layers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    for result in results:
        print(json.dumps(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
