"""The operators' views in-process: metrics (who may read them, and what they say), readiness, liveness.

The views are called directly (``RequestFactory`` requests, as Django's ASGI handler builds them)
and through the test project's URLconf (Django's test clients), on the in-memory channel layer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest
from django.test import AsyncClient, Client, RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from signalr_groups.backplane.layer import get_layer
from signalr_groups.conf import get_hub_settings
from signalr_groups.server import ops, shutdown
from tests.communicator import HubClient
from tests.live import free_port

#: An address outside the default METRICS_ALLOWED_ADDRESSES (TEST-NET-3).
OUTSIDE = "203.0.113.7"


class _User:
    """A user as ``request.auser()`` returns it (no database needed)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, *, staff: bool) -> None:
        self.is_staff = staff


def _request(path: str, address: str, user: Any = None) -> HttpRequest:
    request = RequestFactory().get(path, REMOTE_ADDR=address)
    resolved = user if user is not None else AnonymousUser()

    async def auser() -> Any:
        return resolved

    request.auser = auser  # as AuthenticationMiddleware sets it
    return request


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text body: (name, sorted labels) -> value."""
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


@pytest.fixture
def not_draining(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shutdown state as it was after the test (a test that drains must not leave the process draining)."""
    monkeypatch.setitem(shutdown._state, "draining", False)
    monkeypatch.setitem(shutdown._state, "task", None)
    yield


# ---------------------------------------------------------------- metrics


async def test_metrics_are_refused_to_an_anonymous_request_from_another_address():
    response = await ops.metrics_view(_request("/signalr/metrics", OUTSIDE))
    assert response.status_code == 403
    assert b"signalr_groups" not in response.content


async def test_metrics_are_refused_to_a_non_staff_user_from_another_address():
    response = await ops.metrics_view(_request("/signalr/metrics", OUTSIDE, _User(staff=False)))
    assert response.status_code == 403


async def test_metrics_are_served_to_staff_from_anywhere():
    response = await ops.metrics_view(_request("/signalr/metrics", OUTSIDE, _User(staff=True)))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert b"# TYPE signalr_groups_connections gauge" in response.content


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_metrics_are_served_to_the_default_allowed_addresses(address: str):
    response = await ops.metrics_view(_request("/signalr/metrics", address))
    assert response.status_code == 200


async def test_metrics_allowed_addresses_setting_is_used():
    hub_settings = {**settings.SIGNALR_GROUPS, "METRICS_ALLOWED_ADDRESSES": [OUTSIDE]}
    with override_settings(SIGNALR_GROUPS=hub_settings):
        assert (await ops.metrics_view(_request("/signalr/metrics", OUTSIDE))).status_code == 200
        # The defaults are replaced, not extended.
        assert (await ops.metrics_view(_request("/signalr/metrics", "127.0.0.1"))).status_code == 403


def test_metrics_through_the_urlconf_for_a_staff_session_from_another_address(transactional_db):
    """``metrics_path()`` in tests/urls.py, the session and auth middleware: staff gets in, others do not.

    (Django's sync test client: the async one cannot set REMOTE_ADDR.)
    """
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    staff = user_model.objects.create_user("ops-staff", password="x", is_staff=True)
    plain = user_model.objects.create_user("ops-plain", password="x")
    client = Client(REMOTE_ADDR=OUTSIDE)
    assert client.get("/signalr/metrics").status_code == 403
    client.force_login(plain)
    assert client.get("/signalr/metrics").status_code == 403
    client.force_login(staff)
    response = client.get("/signalr/metrics")
    assert response.status_code == 200
    assert b"signalr_groups_connections" in response.content
    # And from loopback, with no session at all.
    assert Client(REMOTE_ADDR="127.0.0.1").get("/signalr/metrics").status_code == 200


async def test_metrics_body_is_prometheus_text_that_counts_a_connection_and_a_call():
    labels = (("hub", "interop"), ("protocol", "json"), ("transport", "WebSockets"))
    ok = (("hub", "interop"), ("method", "Echo"), ("outcome", "ok"))
    before = _samples((await ops.metrics_view(_request("/signalr/metrics", "127.0.0.1"))).content)
    client = HubClient()
    await client.connect()
    try:
        assert await client.invoke("Echo", 1) == 1
        during = _samples((await ops.metrics_view(_request("/signalr/metrics", "127.0.0.1"))).content)
    finally:
        await client.disconnect()
    after = _samples((await ops.metrics_view(_request("/signalr/metrics", "127.0.0.1"))).content)

    def delta(
        new: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, key: tuple[tuple[str, str], ...]
    ) -> float:
        return new.get((name, key), 0.0) - before.get((name, key), 0.0)

    assert delta(during, "signalr_groups_connections", labels) == 1
    assert delta(during, "signalr_groups_connects_total", labels) == 1
    assert delta(during, "signalr_groups_invocations_total", ok) == 1
    invocation = (("hub", "interop"), ("method", "Echo"))
    assert delta(during, "signalr_groups_invocation_seconds_count", invocation) == 1
    assert delta(after, "signalr_groups_connections", labels) == 0
    assert delta(after, "signalr_groups_disconnects_total", (("hub", "interop"), ("reason", "client_closed"))) == 1
    names = {name for name, _ in after}
    for family in ("signalr_groups_connects_total", "signalr_groups_invocation_seconds_bucket"):
        assert family in names, sorted(names)


async def test_metrics_off_counts_nothing():
    """``METRICS = False``: a connection and a call leave every sample as it was (the view still answers)."""
    before = _samples((await ops.metrics_view(_request("/signalr/metrics", "127.0.0.1"))).content)
    hub_settings = {**settings.SIGNALR_GROUPS, "METRICS": False}
    with override_settings(SIGNALR_GROUPS=hub_settings):
        client = HubClient()
        await client.connect()
        try:
            assert await client.invoke("Echo", 2) == 2
        finally:
            await client.disconnect()
        response = await ops.metrics_view(_request("/signalr/metrics", "127.0.0.1"))
        assert response.status_code == 200
    after = _samples(response.content)
    ours = {key: v for key, v in after.items() if key[0].startswith("signalr_groups_")}
    assert ours == {key: v for key, v in before.items() if key[0].startswith("signalr_groups_")}


# ---------------------------------------------------------------- readiness and liveness


async def _ready() -> tuple[int, dict[str, Any]]:
    response = await ops.readiness_view(_request("/signalr/health/ready", OUTSIDE))
    assert response["Cache-Control"] == "no-store"
    return response.status_code, json.loads(response.content)


async def test_readiness_is_200_with_every_check_ok(transactional_db, not_draining):
    status, body = await _ready()
    assert status == 200, body
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "channel_layer": "ok", "layer_subscriptions": "ok", "draining": "ok"},
    }


def test_readiness_through_the_urlconf(transactional_db, not_draining):
    response = Client(REMOTE_ADDR=OUTSIDE).get("/signalr/health/ready")  # for everyone
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readiness_is_503_while_draining(transactional_db, not_draining):
    shutdown._state["draining"] = True
    status, body = await _ready()
    assert status == 503, body
    assert body["status"] == "unavailable"
    # Answered at once, without the other checks: the load balancer must stop sending here now.
    assert body["checks"] == {"draining": "this process is shutting down"}
    shutdown._state["draining"] = False
    assert (await _ready())[0] == 200


async def test_drain_closes_connections_for_a_reconnect_and_readiness_follows(transactional_db, not_draining):
    """drain() itself: a Close with allowReconnect and no error, new sockets refused, readiness 503."""
    client = HubClient()
    await client.connect()
    assert await client.invoke("Echo", "before") == "before"
    closed = await shutdown.drain()
    assert closed == 1
    assert await client.receive_record() == {"type": 7, "allowReconnect": True}
    assert await client.communicator.receive_output(2) == {"type": "websocket.close", "code": 1000}
    await client.communicator.wait(2)
    assert shutdown.draining()
    status, body = await _ready()
    assert status == 503 and body["checks"]["draining"] != "ok", body
    refused = HubClient()
    connected, _ = await refused.communicator.connect(timeout=2)
    assert not connected  # (the test communicator has no denial-response extension: a close)
    await refused.communicator.wait(2)


async def test_readiness_is_503_naming_the_channel_layer_when_redis_is_unreachable(transactional_db, not_draining):
    """CHANNEL_LAYERS pointing at a channels-redis layer on a closed loopback port.

    ``get_layer()`` uses Channels' ``get_channel_layer`` (REDIS_URL is empty in the test settings),
    whose cache is reset by ``override_settings(CHANNEL_LAYERS=...)``; the test settings' REDIS_URL
    is blanked explicitly so the package's own Redis-layer cache is not involved.
    """
    closed_port = free_port()
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port}/0"]},
        }
    }
    hub_settings = {**settings.SIGNALR_GROUPS, "REDIS_URL": "", "REDIS_SENTINELS": []}
    with override_settings(CHANNEL_LAYERS=layers, SIGNALR_GROUPS=hub_settings):
        layer = get_layer()
        assert type(layer).__module__ == "channels_redis.core", layer
        status, body = await _ready()
    assert status == 503, body
    assert body["status"] == "unavailable"
    # The reason names what failed: the connection to the closed port (refused at once on loopback).
    assert f"127.0.0.1:{closed_port}" in body["checks"]["channel_layer"], body
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["draining"] == "ok"
    # Outside the override, the in-memory layer is back and the process is ready again.
    assert type(get_layer()).__name__ == "InMemoryChannelLayer"
    assert (await _ready())[0] == 200


async def test_liveness_is_200():
    response = await ops.liveness_view(_request("/signalr/health/live", OUTSIDE))
    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "alive"}
    assert response["Cache-Control"] == "no-store"
    assert (await AsyncClient().get("/signalr/health/live")).status_code == 200


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("value", [["not-an-ip"], ["127.0.0.1", "not-an-ip"], "127.0.0.1", None])
def test_bad_metrics_allowed_addresses_are_improperly_configured(value: object):
    hub_settings = {**settings.SIGNALR_GROUPS, "METRICS_ALLOWED_ADDRESSES": value}
    with override_settings(SIGNALR_GROUPS=hub_settings), pytest.raises(ImproperlyConfigured) as raised:
        get_hub_settings()
    assert "METRICS_ALLOWED_ADDRESSES" in str(raised.value)
    if isinstance(value, list):
        assert "not-an-ip" in str(raised.value)


def test_metrics_allowed_addresses_are_normalized():
    hub_settings = {**settings.SIGNALR_GROUPS, "METRICS_ALLOWED_ADDRESSES": ["0:0:0:0:0:0:0:1", "10.0.0.1"]}
    with override_settings(SIGNALR_GROUPS=hub_settings):
        assert get_hub_settings().metrics_allowed_addresses == frozenset({"::1", "10.0.0.1"})
