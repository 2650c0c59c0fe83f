"""No sticky sessions: two daphne processes on one redis-server behind nginx with a plain round-robin upstream.

nginx spreads every request over both processes in turn (one worker, two ``server`` lines, no
``ip_hash``, no ``sticky``), so a Server-Sent Events or long-polling connection's POSTs and polls
reach the process that owns it and the one that does not, which relays them over the channel layer.
The official Node client, through nginx, sends numbered messages to a group on each transport and
hub protocol; a member on the same transport must get each one exactly once, in order. nginx's access
log (``$upstream_addr``) shows that both processes served the member's requests.

Then, without nginx, a raw HTTP client times a relayed POST and a relayed poll against local ones.
Timings and request counts are printed (``-s``) and attached with ``record_property``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from django.conf import settings
from websockets.asyncio.client import connect

from tests.live import NodeDriver, ServerProcess, free_port, received, stop_process
from tests.nginx_config import round_robin_config

pytestmark = pytest.mark.timeout(120)

#: Numbered messages per run.
COUNT = 200
TRANSPORTS = ("WebSockets", "ServerSentEvents", "LongPolling")
PROTOCOLS = ("json", "messagepack")
#: MessagePack over Server-Sent Events is refused (negotiate lists SSE as Text only).
PAIRS = [(t, p) for t in TRANSPORTS for p in PROTOCOLS if not (t == "ServerSentEvents" and p == "messagepack")]
CLIENT_CLASSES = {
    "WebSockets": "WebSocketTransport",
    "ServerSentEvents": "ServerSentEventsTransport",
    "LongPolling": "LongPollingTransport",
}
#: nginx waits this long for an upstream answer: more than a long poll (90 s) or an idle SSE stream.
PROXY_READ_TIMEOUT = 120
RS = "\x1e"
#: Timed requests per (local|relayed) kind in the latency test, after a warm-up.
SAMPLES = 20
WARM_UP = 4
#: NEGOTIATE_TOKEN_MAX_AGE (s) of the latency test's processes: the first GET must come within it.
TOKEN_MAX_AGE = 3
#: Sanity bound for a median (loopback, one redis-server): generous, not a benchmark.
MEDIAN_BOUND_MS = 250.0


# ---------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def servers(django_db_setup, redis_url, tmp_path_factory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Server processes A and B, scaled out on one redis-server (the pub/sub layer)."""
    logdir: Path = tmp_path_factory.mktemp("nginx-rr-daphne")
    db = str(settings.DATABASES["default"]["NAME"])
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            # A short DISCONNECT_TIMEOUT: ended long-polling connections are forgotten soon after the tests.
            env = {"SIGNALR_TEST_REDIS_URL": redis_url, "SIGNALR_TEST_SETTINGS": json.dumps({"DISCONNECT_TIMEOUT": 2})}
            started.append(ServerProcess(logdir / f"{name}.log", db, extra_env=env))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


@dataclass
class Nginx:
    port: int
    access_log: Path
    upstreams: tuple[int, int]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def lines(self) -> list[dict[str, str]]:
        """The access log, one dict per request (see ``log_format rr``)."""
        entries = []
        for line in self.access_log.read_text().splitlines():
            upstream, status, method, uri, request_time, upstream_time = line.split("|")
            entries.append(
                {
                    "upstream": upstream,
                    "status": status,
                    "method": method,
                    "uri": uri,
                    "request_time": request_time,
                    "upstream_time": upstream_time,
                }
            )
        return entries


@pytest.fixture(scope="module")
def nginx(servers, tmp_path_factory) -> Iterator[Nginx]:
    """Debian's nginx on a free loopback port, round-robin over A and B; stopped by its PID."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is required (scripts/test.sh installs it)"
    prefix: Path = tmp_path_factory.mktemp("nginx-rr")
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / name).mkdir()
    port = free_port()
    upstreams = (servers[0].port, servers[1].port)
    config = prefix / "nginx.conf"
    config.write_text(round_robin_config(prefix, port, upstreams, read_timeout=PROXY_READ_TIMEOUT))
    process = subprocess.Popen(
        [binary, "-c", str(config), "-p", str(prefix), "-e", str(prefix / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (prefix / "error.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield Nginx(port, prefix / "access.log", upstreams)
    finally:
        stop_process(process)


# ---------------------------------------------------------------- the official client through nginx


def _connect(node: NodeDriver, name: str, url: str, transport: str, protocol: str) -> None:
    reply = node.call(
        "connect", name=name, url=url, headers={}, events=["Receive"], transport=transport, protocol=protocol
    )
    assert reply["ok"], f"connect {name} failed: {reply.get('error')}"
    assert reply["transport"] == CLIENT_CLASSES[transport]
    node.events[name] = []


def _stop(node: NodeDriver, name: str) -> None:
    node.stop(name)
    events = node.wait_for(name, lambda ev: any(e["target"] == "__closed__" for e in ev))
    closed = [e for e in events if e["target"] == "__closed__"]
    assert closed[-1]["args"] == [None], closed  # a clean stop


def _sequence(events: list[dict[str, Any]]) -> list[int]:
    """The numbers of the ``Receive("group", {"seq": n})`` messages, in arrival order."""
    numbers = []
    for kind, message in received(events):
        if kind == "group" and message != "fence":
            numbers.append(int(json.loads(message)["seq"]))
    return numbers


def _port(request: dict[str, str]) -> int:
    """The upstream port that served a request (``$upstream_addr``)."""
    return int(request["upstream"].rsplit(":", 1)[1])


def _requests_of(nginx: Nginx, client: str) -> list[dict[str, str]]:
    return [line for line in nginx.lines() if f"client={client}" in line["uri"]]


def _pubsub_channels(redis_url: str) -> int:
    return len(_pubsub_channel_names(redis_url))


def _pubsub_channel_names(redis_url: str) -> list[str]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        names = client.pubsub_channels()
        return sorted(name.decode(errors="replace") if isinstance(name, bytes) else str(name) for name in names)
    finally:
        client.close()


@pytest.mark.parametrize(("transport", "protocol"), PAIRS, ids=[f"{t}-{p}" for t, p in PAIRS])
def test_numbered_messages_arrive_once_and_in_order_through_round_robin(
    nginx: Nginx, node: NodeDriver, redis_url: str, transport: str, protocol: str, record_property
):
    channels_before = _pubsub_channels(redis_url)
    tag = f"{transport}-{protocol}-{uuid.uuid4().hex[:8]}"
    group = f"rr-{tag}"
    sender, receiver = f"send-{tag}", f"recv-{tag}"
    # A query parameter of our own tells each client's requests apart in the access log.
    _connect(node, receiver, nginx.url(f"/interop?client={receiver}"), transport, protocol)
    _connect(node, sender, nginx.url(f"/interop?client={sender}"), transport, protocol)
    assert node.invoke(receiver, "JoinGroup", group) is True
    # A few more calls: on HTTP transports each is a POST, and two in a row go to different processes.
    for name in (receiver, sender):
        for index in range(4):
            assert node.invoke(name, "Echo", index) == index

    started = time.monotonic()
    assert node.call("spam", name=sender, method="SendToGroup", group=group, count=COUNT, interval=0)["ok"]
    node.wait_for(sender, lambda ev: any(e["target"].startswith("__spam_") for e in ev), timeout=30)
    assert not [e for e in node.collect(sender) if e["target"] == "__spam_error__"]
    # Invocations of one connection run in order: once this one completed, every send was handled.
    node.invoke(sender, "SendToGroup", group, "fence")
    events = node.wait_for(receiver, lambda ev: ["group", "fence"] in received(ev), timeout=30)
    took = time.monotonic() - started
    time.sleep(0.3)  # a duplicate would come now
    events = node.collect(receiver)

    numbers = _sequence(events)
    duplicates = sorted(n for n, count in Counter(numbers).items() if count > 1)
    missing = sorted(set(range(COUNT)) - set(numbers))
    assert not missing, f"lost {len(missing)}: {missing[:20]}"
    assert not duplicates, f"duplicated: {duplicates[:20]}"
    assert numbers == list(range(COUNT)), "out of order"
    assert received(events).count(["group", "fence"]) == 1

    _stop(node, receiver)
    _stop(node, sender)

    # nginx writes a request's line when it ends: the SSE stream and the last poll end with the stop.
    deadline = time.monotonic() + 10
    while True:
        connection_requests = [r for r in _requests_of(nginx, receiver) if "id=" in r["uri"]]
        if sum(r["method"] == "GET" for r in connection_requests) >= 1 and (
            transport != "LongPolling" or any(r["method"] == "DELETE" for r in connection_requests)
        ):
            break
        assert time.monotonic() < deadline, connection_requests
        time.sleep(0.05)
    everything = _requests_of(nginx, receiver)
    upstream_ports = {_port(r) for r in everything}
    by_port = Counter(f"{r['method']} {_port(r)}" for r in connection_requests)
    channels_after = _pubsub_channels(redis_url)
    print(
        f"{transport}/{protocol}: {COUNT} messages in {took:.2f} s; the receiver's {len(everything)} requests "
        f"(method upstream-port: count): {dict(sorted(by_port.items()))}; Redis pub/sub channels "
        f"{channels_before} before, {channels_after} after (every connection stopped)"
    )
    record_property(f"{transport}-{protocol}-pubsub-channels", [channels_before, channels_after])
    record_property(f"{transport}-{protocol}-requests", dict(by_port))
    record_property(f"{transport}-{protocol}-seconds", round(took, 3))
    assert all(not r["status"].startswith("5") for r in everything), everything
    # Round robin sent the receiver's requests to both processes (negotiate included).
    assert upstream_ports == set(nginx.upstreams), everything
    if transport != "WebSockets":
        # And its connection's own requests (stream or polls, POSTs, DELETE) reached both the owner
        # (the process of its first GET: the claim) and the other one, which relayed them.
        owner = _port(next(r for r in connection_requests if r["method"] == "GET"))
        relayed = [r for r in connection_requests if _port(r) != owner]
        assert relayed, connection_requests
        # Every request was answered, but for the stop: the client aborts its last poll (499), and it
        # sends its close message without waiting, together with the DELETE (or the end of the
        # stream), so that POST may find the connection already gone (404, as ASP.NET Core answers).
        posts = [r for r in connection_requests if r["method"] == "POST"]
        stop_race = [posts[-1]] if posts and posts[-1]["status"] == "404" else []
        unexpected = [
            r
            for r in connection_requests
            if r["status"] not in ("200", "202", "204")
            and not (r["method"] == "GET" and r["status"] == "499")
            and not any(r is late for late in stop_race)
        ]
        assert not unexpected, unexpected
        record_property(f"{transport}-{protocol}-relayed-requests", len(relayed))


# ---------------------------------------------------------------- relayed vs local, without nginx


@pytest.fixture
def fresh_pair(django_db_setup, redis_url, tmp_path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two new server processes on the same Redis: B has never held a connection of the hub.

    Negotiate tokens are fresh for a few seconds only: a GET or POST with a fresh token may start a
    connection, so a process that does not own it briefly starts its lifetime manager to try the
    claim; once the token is no longer fresh, a relayed request is only relayed.
    """
    db = str(settings.DATABASES["default"]["NAME"])
    hub_settings = {"NEGOTIATE_TOKEN_MAX_AGE": TOKEN_MAX_AGE}
    env = {"SIGNALR_TEST_REDIS_URL": redis_url, "SIGNALR_TEST_SETTINGS": json.dumps(hub_settings)}
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            started.append(ServerProcess(tmp_path / f"{name}.log", db, extra_env=env))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


class LongPollingClient:
    """A raw long-polling connection: negotiated and started on ``owner``, so ``owner`` owns it."""

    def __init__(self, session: aiohttp.ClientSession, owner: ServerProcess) -> None:
        self.session = session
        self.owner = owner
        self.token = ""
        self.invocations = 0

    def url(self, server: ServerProcess) -> str:
        return f"{server.http_url}/interop?id={self.token}"

    async def start(self) -> None:
        async with self.session.post(f"{self.owner.http_url}/interop/negotiate?negotiateVersion=1") as response:
            assert response.status == 200, await response.text()
            self.token = (await response.json())["connectionToken"]
        async with self.session.get(self.url(self.owner)) as response:  # the claim: the first poll, at once
            assert response.status == 200
        status, _ = await self.post(self.owner, '{"protocol":"json","version":1}' + RS)
        assert status == 200
        assert await self.poll_until(self.owner, lambda record: record == {}), "no handshake answer"

    async def post(self, server: ServerProcess, body: str) -> tuple[int, float]:
        started = time.perf_counter()
        async with self.session.post(self.url(server), data=body.encode()) as response:
            await response.read()
            return response.status, time.perf_counter() - started

    async def poll(self, server: ServerProcess) -> tuple[int, list[Any], float]:
        started = time.perf_counter()
        async with self.session.get(self.url(server)) as response:
            data = await response.read()
            took = time.perf_counter() - started
        records = [json.loads(part) for part in data.decode().split(RS) if part]
        return response.status, records, took

    async def poll_until(self, server: ServerProcess, wanted: Callable[[Any], bool], limit: int = 10) -> list[Any]:
        for _ in range(limit):
            status, records, _ = await self.poll(server)
            assert status == 200
            if any(wanted(record) for record in records):
                return records
        return []

    async def measure(self, local: ServerProcess, other: ServerProcess, samples: int) -> dict[str, list[float]]:
        """Echo invocations: POSTed to ``local`` or ``other`` in turn, their completions polled from either.

        A poll is timed only when the completion was already queued on the owner (nearly always,
        20 ms after the POST); one that had to wait for it is not counted.
        """
        timings: dict[str, list[float]] = {"post local": [], "post relayed": [], "poll local": [], "poll relayed": []}
        for index in range(WARM_UP + 2 * samples):
            post_to = (local, other)[index % 2]
            poll_from = (local, other)[(index // 2) % 2]
            self.invocations += 1
            invocation_id = str(self.invocations)
            value = f"echo-{invocation_id}"
            invocation = {"type": 1, "invocationId": invocation_id, "target": "Echo", "arguments": [value]}
            status, post_took = await self.post(post_to, json.dumps(invocation) + RS)
            assert status == 200, (index, status)
            await asyncio.sleep(0.02)
            status, records, poll_took = await self.poll(poll_from)
            assert status == 200, (index, status)
            completions = [r for r in records if r.get("type") == 3 and r.get("invocationId") == invocation_id]
            timed = bool(completions)
            if not timed:

                def is_answer(record: dict[str, Any], wanted: str = invocation_id) -> bool:
                    return bool(record.get("invocationId") == wanted)

                records = await self.poll_until(local, is_answer)
                completions = [r for r in records if r.get("invocationId") == invocation_id]
            assert completions and completions[0].get("result") == value, records
            if index < WARM_UP:
                continue
            timings["post " + ("local" if post_to is local else "relayed")].append(post_took)
            if timed:
                timings["poll " + ("local" if poll_from is local else "relayed")].append(poll_took)
        for kind, values in timings.items():
            assert len(values) >= samples // 2, (kind, len(values))
        return timings


def _medians(timings: dict[str, list[float]]) -> dict[str, float]:
    return {kind: statistics.median(values) * 1000 for kind, values in timings.items()}


def test_no_pubsub_subscription_outlives_the_connections(nginx: Nginx, redis_url: str):
    """Once every connection of the tests above has ended (and been forgotten after DISCONNECT_TIMEOUT),
    each process keeps at most its one shared reply channel subscribed: nothing leaks per request."""
    deadline = time.monotonic() + 15
    count = _pubsub_channels(redis_url)
    while count > 2 and time.monotonic() < deadline:
        time.sleep(0.25)
        count = _pubsub_channels(redis_url)
    assert count <= 2, f"{count} pub/sub channels still subscribed: {_pubsub_channel_names(redis_url)}"


async def test_relayed_post_and_poll_latency(fresh_pair, record_property):
    """Time POSTs and polls of a connection owned by A, sent to A (local) and to B (relayed to A).

    Twice: while B holds no connection of the hub (its lifetime manager is stopped, so each relayed
    request waits for its answer on a new layer channel: with the pub/sub layer, up to 100 ms
    more, as channels-redis reads nothing for 0.1 s at a time while no channel is subscribed),
    then while B holds one (the manager's long-lived channel takes the answers).
    """
    a, b = fresh_pair
    results: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        client = LongPollingClient(session, a)
        await client.start()
        # The token is no longer fresh (its timestamp has whole seconds: up to 1 s more).
        await asyncio.sleep(TOKEN_MAX_AGE + 1.2)
        results["B idle"] = _medians(await client.measure(a, b, SAMPLES))
        async with connect(f"{b.ws_url}/interop", open_timeout=10) as busy:
            await busy.send('{"protocol":"json","version":1}' + RS)
            assert json.loads(str(await busy.recv()).rstrip(RS)) == {}
            results["B busy"] = _medians(await client.measure(a, b, SAMPLES))

        # Ending it through B: the DELETE is relayed too, and the owner's next poll says it is over.
        async with session.delete(client.url(b)) as response:
            assert response.status == 202
        status, _, _ = await client.poll(a)
        assert status == 204

    for phase, medians in results.items():
        summary = ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in medians.items())
        print(
            f"relay latency medians ({phase}, n={SAMPLES} each): {summary}; a relayed POST adds "
            f"{medians['post relayed'] - medians['post local']:.1f} ms, a relayed poll "
            f"{medians['poll relayed'] - medians['poll local']:.1f} ms"
        )
        for kind, ms in medians.items():
            record_property(f"{phase.replace(' ', '_')}_{kind.replace(' ', '_')}_median_ms", round(ms, 2))
        assert all(ms < MEDIAN_BOUND_MS for ms in medians.values()), (phase, medians)
