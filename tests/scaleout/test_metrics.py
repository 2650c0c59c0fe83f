"""Grafana-free proof that the metrics are right: exact deltas for a known workload on two processes.

Two daphne processes A and B on one redis-server. The metrics are per process (``signalr_groups.metrics``:
scrape every process and sum, as PromQL's ``sum()`` would). The official Node client runs a workload
whose every count is known in advance: alice on A and bob on B join group "m", alice sends five
messages to it (each delivered to alice on A and to bob on B, through Redis), calls Fail once, then bob
stops. Scrapes of A and B before, during and after must show exactly those deltas, process by process
and summed.

Then, on one process under daphne and under uvicorn: a close the server starts (the hub aborts) is
counted as soon as the official client has closed its socket.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.live import InvocationError, NodeDriver, ServerProcess, received

pytestmark = pytest.mark.timeout(90)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

HUB = "interop"
WS_JSON = {"hub": HUB, "transport": "WebSockets", "protocol": "json"}
SENDS = 5


@pytest.fixture
def processes(django_db_setup, redis_url, tmp_path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """New processes A and B on one Redis (new: their counters start from nothing)."""
    env = {"SIGNALR_TEST_REDIS_URL": redis_url}
    db = str(settings.DATABASES["default"]["NAME"])
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            started.append(ServerProcess(tmp_path / f"{name}.log", db, extra_env=env))
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()


def scrape(server: ServerProcess) -> Samples:
    """Every sample of ``/signalr/metrics`` (from 127.0.0.1: an allowed address), by name and labels."""
    with urllib.request.urlopen(f"{server.http_url}/signalr/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"the sample {key} appears twice"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels`` (0 if absent: nothing counted for those labels yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (sample, keys), v in samples.items() if sample == name and wanted <= set(keys))


#: What the test asserts: a name, and how to read it from one scrape.
READINGS: dict[str, Callable[[Samples], float]] = {
    "connects": lambda s: value(s, "signalr_groups_connects_total", **WS_JSON),
    "connections": lambda s: value(s, "signalr_groups_connections", **WS_JSON),
    "disconnects client_closed": lambda s: value(
        s, "signalr_groups_disconnects_total", hub=HUB, reason="client_closed"
    ),
    "disconnects (any reason)": lambda s: total(s, "signalr_groups_disconnects_total", hub=HUB),
    "invocations JoinGroup ok": lambda s: value(
        s, "signalr_groups_invocations_total", hub=HUB, method="JoinGroup", outcome="ok"
    ),
    "invocations SendToGroup ok": lambda s: value(
        s, "signalr_groups_invocations_total", hub=HUB, method="SendToGroup", outcome="ok"
    ),
    "invocations Fail hub_error": lambda s: value(
        s, "signalr_groups_invocations_total", hub=HUB, method="Fail", outcome="hub_error"
    ),
    "invocations (all)": lambda s: total(s, "signalr_groups_invocations_total", hub=HUB),
    "invocation histogram count": lambda s: total(s, "signalr_groups_invocation_seconds_count", hub=HUB),
    "invocation histogram +Inf bucket": lambda s: total(
        s, "signalr_groups_invocation_seconds_bucket", hub=HUB, le="+Inf"
    ),
    # The address label is the Address kind: all, connections, groups, users.
    "messages_sent groups": lambda s: value(s, "signalr_groups_messages_sent_total", hub=HUB, address="groups"),
    "messages_sent (any address)": lambda s: total(s, "signalr_groups_messages_sent_total", hub=HUB),
    "deliveries": lambda s: value(s, "signalr_groups_deliveries_total", hub=HUB),
    "layer signalr.send sent": lambda s: value(s, "signalr_groups_layer_messages_sent_total", type="signalr.send"),
    "layer signalr.send received": lambda s: value(
        s, "signalr_groups_layer_messages_received_total", hub=HUB, type="signalr.send"
    ),
}


def deltas(before: Samples, after: Samples) -> dict[str, float]:
    """Every reading, after - before."""
    return {name: read(after) - read(before) for name, read in READINGS.items()}


def added(*parts: dict[str, float]) -> dict[str, float]:
    """The sums over processes (PromQL's ``sum()``)."""
    return {name: sum(part[name] for part in parts) for name in READINGS}


def test_a_known_workload_gives_exact_deltas_per_process_and_summed(processes, live_users, node: NodeDriver):
    a, b = processes
    started = time.monotonic()
    before_a, before_b = scrape(a), scrape(b)

    node.connect("alice", f"{a.http_url}/interop", cookie=live_users["alice"])
    node.connect("bob", f"{b.http_url}/interop", cookie=live_users["bob"])
    assert node.invoke("alice", "JoinGroup", "m") is True
    assert node.invoke("bob", "JoinGroup", "m") is True
    for index in range(SENDS):
        node.invoke("alice", "SendToGroup", "m", f"n{index}")
    with pytest.raises(InvocationError, match="on purpose"):
        node.invoke("alice", "Fail", "on purpose")
    expected = [["group", f"n{index}"] for index in range(SENDS)]
    for name in ("alice", "bob"):
        node.wait_for(name, lambda events: received(events) == expected, timeout=10)

    on_a, on_b = deltas(before_a, scrape(a)), deltas(before_b, scrape(b))
    summed = added(on_a, on_b)
    print(f"metrics deltas with both connected: A {json.dumps(on_a)}; B {json.dumps(on_b)}")
    # A: alice's connection, her 7 calls, her 5 sends (each queued once, to her, and sent once over Redis).
    assert on_a["connects"] == 1 and on_a["connections"] == 1, on_a
    assert on_a["invocations JoinGroup ok"] == 1, on_a
    assert on_a["invocations SendToGroup ok"] == SENDS, on_a
    assert on_a["invocations Fail hub_error"] == 1, on_a
    assert on_a["invocations (all)"] == on_a["invocation histogram count"] == 1 + SENDS + 1, on_a
    assert on_a["invocation histogram +Inf bucket"] == 1 + SENDS + 1, on_a
    assert on_a["messages_sent groups"] == on_a["messages_sent (any address)"] == SENDS, on_a
    assert on_a["deliveries"] == SENDS, on_a
    assert on_a["layer signalr.send sent"] >= SENDS, on_a
    # B: bob's connection and his one call; the 5 sends came over Redis and were queued to him.
    assert on_b["connects"] == 1 and on_b["connections"] == 1, on_b
    assert on_b["invocations JoinGroup ok"] == on_b["invocations (all)"] == 1, on_b
    assert on_b["invocation histogram count"] == 1, on_b
    assert on_b["messages_sent (any address)"] == 0, on_b
    assert on_b["deliveries"] == SENDS, on_b
    assert on_b["layer signalr.send received"] >= SENDS, on_b
    # Summed, as a dashboard shows them.
    assert summed["connects"] == 2, summed
    assert summed["connections"] == 2, summed
    assert summed["disconnects (any reason)"] == 0, summed
    assert summed["invocations JoinGroup ok"] == 2, summed
    assert summed["invocations SendToGroup ok"] == SENDS, summed
    assert summed["invocations Fail hub_error"] == 1, summed
    assert summed["invocations (all)"] == 2 + SENDS + 1, summed
    assert summed["invocation histogram count"] == 2 + SENDS + 1, summed
    assert summed["messages_sent groups"] == SENDS, summed
    assert summed["deliveries"] == 2 * SENDS, summed
    assert summed["layer signalr.send sent"] >= SENDS, summed

    node.stop("bob")
    node.wait_for("bob", lambda events: any(e["target"] == "__closed__" for e in events))
    # B counts the disconnect once the connection's teardown ran: wait for it (bounded).
    deadline = time.monotonic() + 10
    while True:
        after_b = scrape(b)
        if deltas(before_b, after_b)["disconnects (any reason)"] >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    on_a, on_b = deltas(before_a, scrape(a)), deltas(before_b, after_b)
    summed = added(on_a, on_b)
    print(
        f"metrics deltas after bob left: A {json.dumps(on_a)}; B {json.dumps(on_b)} "
        f"({time.monotonic() - started:.2f} s)"
    )
    assert on_b["connections"] == 0, on_b
    assert on_b["disconnects client_closed"] == on_b["disconnects (any reason)"] == 1, on_b
    assert on_a["connections"] == 1 and on_a["disconnects (any reason)"] == 0, on_a
    assert summed["connects"] == 2, summed
    assert summed["connections"] == 1, summed  # the starting value + alice
    assert summed["disconnects client_closed"] == 1, summed
    assert summed["invocations (all)"] == summed["invocation histogram count"] == 2 + SENDS + 1, summed
    assert summed["deliveries"] == 2 * SENDS, summed
    # InteropHub.on_disconnected tells the "lifecycle-watchers" group: bob's leaving is one more group send
    # (counted by B, although nobody is in that group: nothing was delivered for it).
    assert on_b["messages_sent groups"] == 1, on_b
    assert summed["messages_sent groups"] == summed["messages_sent (any address)"] == SENDS + 1, summed


# ---------------------------------------------------------------- a close the server starts


@pytest.fixture(params=["daphne", "uvicorn"])
def single(request, django_db_setup, tmp_path) -> Iterator[ServerProcess]:
    """One server process, under daphne and under uvicorn."""
    db = str(settings.DATABASES["default"]["NAME"])
    server = ServerProcess(tmp_path / "server.log", db, server=request.param)
    yield server
    server.stop()


def _wait_connections(server: ServerProcess, connections: float, timeout: float) -> Samples:
    """Scrape ``server`` until its connections gauge says ``connections`` (bounded); the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if READINGS["connections"](samples) == connections or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def test_a_server_initiated_close_is_counted_as_soon_as_the_client_closes(single, request, node: NodeDriver):
    """The hub aborts the connection (a Close message); the official client closes its socket at once, so the
    server's teardown, and the gauge and counter it updates, must follow within a moment.

    Under daphne a connection lingers after its Close message for the client's close (flow.py, up to
    CLOSE_LINGER, 3 s): reading the socket must stay on meanwhile, or the close is seen only at the timeout.
    """
    node.connect("x", f"{single.http_url}/interop")
    before = _wait_connections(single, 1, timeout=5)
    assert READINGS["connections"](before) == 1
    started = time.monotonic()
    node.send("x", "AbortMe")
    node.wait_for("x", lambda events: any(e["target"] == "__closed__" for e in events))
    after = _wait_connections(single, 0, timeout=5)
    took = time.monotonic() - started
    aborted = value(after, "signalr_groups_disconnects_total", hub=HUB, reason="aborted") - value(
        before, "signalr_groups_disconnects_total", hub=HUB, reason="aborted"
    )
    print(f"a server-initiated close counted {took:.3f} s after the abort")
    assert READINGS["connections"](after) == 0
    assert aborted == 1
    assert took < 1.0, f"the teardown took {took:.2f} s"
