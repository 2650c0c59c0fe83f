"""Settings validation, system checks and the Origin policy."""

from __future__ import annotations

from typing import Any

import pytest
from channels.routing import ProtocolTypeRouter
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from signalr_groups.auth.origin import cors_headers, listed_origin, origin_allowed
from signalr_groups.checks import CHECK_IDS, check_settings
from signalr_groups.conf import get_hub_settings


def _ids():
    return [message.id for message in check_settings()]


def test_defaults_are_the_aspnet_core_ones():
    with override_settings(SIGNALR_GROUPS={}):
        settings = get_hub_settings()
        assert (settings.keep_alive_interval, settings.client_timeout, settings.handshake_timeout) == (15, 30, 15)
        assert settings.max_message_size == 32 * 1024
        assert settings.detailed_errors is False
        assert _ids() == []


@pytest.mark.parametrize(
    "bad",
    [
        {"KEEP_ALIVE": 1},
        {"CLIENT_TIMEOUT": 0},
        {"MAX_MESSAGE_SIZE": 1.5},
        {"MAX_MESSAGE_SIZE": True},
        {"DETAILED_ERRORS": "yes"},
        {"USER_ID_PROVIDER": "no.such.module.provider"},
        {"ALLOWED_ORIGINS": "https://example.com"},
        {"MAX_INVOCATIONS_PER_SECOND": 0},
        {"MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS": 2.5},
        {"REDIS_SENTINELS": "127.0.0.1:26379"},
        {"REDIS_SENTINELS": ["127.0.0.1"]},
        {"REDIS_SENTINELS": ["127.0.0.1:99999"]},
        {"REDIS_SENTINEL_MASTER": ""},
    ],
)
def test_bad_settings_are_reported(bad):
    with override_settings(SIGNALR_GROUPS=bad):
        with pytest.raises(ImproperlyConfigured):
            get_hub_settings()
        assert _ids() == ["signalr_groups.E001"]


def test_missing_channel_layer_and_timing_warnings():
    with override_settings(SIGNALR_GROUPS={"CHANNEL_LAYER": "nope"}):
        assert _ids() == ["signalr_groups.E002"]
    with override_settings(SIGNALR_GROUPS={"CHANNEL_LAYER": "nope", "REDIS_URL": "redis://127.0.0.1:1/0"}):
        assert _ids() == []  # REDIS_URL: the app builds its own layer
    with override_settings(SIGNALR_GROUPS={"KEEP_ALIVE_INTERVAL": 20, "CLIENT_TIMEOUT": 10}):
        assert sorted(_ids()) == ["signalr_groups.W001", "signalr_groups.W002"]
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}):
        assert _ids() == ["signalr_groups.W003"]
    with override_settings(SIGNALR_GROUPS={"MAX_GROUPS_PER_CONNECTION": 50_000, "MAX_MESSAGE_SIZE": 4 << 20}):
        assert sorted(_ids()) == ["signalr_groups.W006", "signalr_groups.W007"]


def test_redis_core_layer_needs_a_socket_timeout_above_its_blocking_pop():
    def layers(hosts):
        return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": hosts}}}

    with override_settings(CHANNEL_LAYERS=layers(["redis://127.0.0.1:6379"])):
        assert _ids() == ["signalr_groups.W004"]
    with override_settings(CHANNEL_LAYERS=layers([{"address": "redis://127.0.0.1:6379", "socket_timeout": 10}])):
        assert _ids() == []
    short = [{"address": "redis://127.0.0.1:6379", "socket_timeout": 10}]
    with override_settings(
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": short, "group_expiry": 1200},
            }
        }
    ):
        assert _ids() == ["signalr_groups.W005"]
    pubsub = {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {}}}
    with override_settings(CHANNEL_LAYERS=pubsub):
        assert _ids() == []


def test_check_ids_are_documented_once():
    assert len(CHECK_IDS) == len(set(CHECK_IDS))


def test_sentinels_are_read_as_host_port_pairs():
    with override_settings(SIGNALR_GROUPS={"REDIS_SENTINELS": ["10.0.0.1:26379", ("sentinel-2", 26380)]}):
        assert get_hub_settings().redis_sentinels == (("10.0.0.1", 26379), ("sentinel-2", 26380))


def _scope(origin: bytes | None, host: bytes = b"127.0.0.1:8000", scheme: str = "ws"):
    headers = [(b"host", host)]
    if origin is not None:
        headers.append((b"origin", origin))
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser: Node, Python and .NET clients send no Origin
        (b"http://127.0.0.1:8000", True),
        (b"https://127.0.0.1:8000", True),
        (b"http://127.0.0.1:8001", False),  # another port on an allowed host is another origin
        (b"http://127.0.0.1", False),
        (b"https://localhost", False),  # allowed host, but not the one the request was sent to
        (b"http://evil.example", False),
        (b"http://localhost.evil.example", False),
        (b"http://127.0.0.1.evil.example", False),
        (b"null", False),
        (b"file://", False),
        (b"\xff\xfe", False),
    ],
)
def test_origin_policy(origin, allowed):
    assert origin_allowed(_scope(origin)) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        (b"https://localhost", b"localhost", "ws", True),  # TLS ended by a proxy: Host has no port
        (b"https://localhost", b"localhost", "wss", True),
        (b"http://localhost", b"localhost", "wss", False),  # a plain-http page on a wss socket
        (b"http://localhost:80", b"localhost", "ws", True),
        (b"https://localhost:8443", b"localhost", "ws", False),
        (b"http://localhost:8000", b"localhost:8000", "ws", True),
        (b"http://localhost:8000", b"LOCALHOST:8000", "ws", True),
    ],
)
def test_default_policy_is_same_origin(origin, host, scheme, allowed):
    with override_settings(ALLOWED_HOSTS=["localhost"]):
        assert origin_allowed(_scope(origin, host, scheme)) is allowed


def test_explicit_allowed_origins():
    with override_settings(SIGNALR_GROUPS={"ALLOWED_ORIGINS": ["https://app.example.com"]}):
        assert origin_allowed(_scope(b"https://app.example.com"))
        assert not origin_allowed(_scope(b"http://app.example.com"))
        assert not origin_allowed(_scope(b"http://127.0.0.1:8000"))


def test_debug_with_no_allowed_hosts_allows_localhost_only():
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[]):
        assert origin_allowed(_scope(b"http://localhost:8000", b"localhost:8000"))
        assert not origin_allowed(_scope(b"http://example.com", b"example.com"))


def test_behind_a_proxy_that_sets_x_forwarded_host():
    scope = _scope(b"https://chat.example.com", b"127.0.0.1:8000")
    scope["headers"].append((b"x-forwarded-host", b"chat.example.com"))
    with override_settings(ALLOWED_HOSTS=["chat.example.com"]):
        assert not origin_allowed(scope)  # Host is the upstream address: another origin
        with override_settings(USE_X_FORWARDED_HOST=True):
            assert origin_allowed(scope)


def test_http_transports_without_a_hub_http_router_are_reported():
    """W008: SSE/long polling enabled, but the 'http' application never reaches a HubHttpRouter."""
    assert _ids() == []  # tests.asgi routes HubHttpRouter
    with override_settings(ASGI_APPLICATION="tests.unit.test_conf_checks.APP_WITHOUT_HTTP_ROUTER"):
        assert _ids() == ["signalr_groups.W008"]
        with override_settings(SIGNALR_GROUPS={"TRANSPORTS": ["WebSockets"]}):
            assert _ids() == []


def test_transport_and_protocol_settings_are_validated():
    bad: dict[str, Any]
    for bad in (
        {"TRANSPORTS": ["Carrier pigeon"]},
        {"TRANSPORTS": "WebSockets"},
        {"PROTOCOLS": []},
        {"PROTOCOLS": ["xml"]},
    ):
        with override_settings(SIGNALR_GROUPS=bad):
            assert _ids() == ["signalr_groups.E001"], bad
    with override_settings(SIGNALR_GROUPS={"TRANSPORTS": {"chat": ["LongPolling", "WebSockets"]}}):
        settings = get_hub_settings()
        assert settings.transports_for("chat") == ("WebSockets", "LongPolling")  # negotiate's order, always
        assert settings.transports_for("other") == ("WebSockets", "ServerSentEvents", "LongPolling")


async def _plain_http(scope, receive, send):  # pragma: no cover - never served
    raise AssertionError


APP_WITHOUT_HTTP_ROUTER = ProtocolTypeRouter({"http": _plain_http})


def test_cors_headers_only_for_listed_origins():
    with override_settings(SIGNALR_GROUPS={"ALLOWED_ORIGINS": ["https://app.example.com"]}):
        assert listed_origin("https://APP.example.com") == "https://APP.example.com"
        assert listed_origin("https://evil.example.com") is None
        assert listed_origin("null") is None and listed_origin(None) is None
        headers = dict(cors_headers("https://app.example.com", preflight=True))
        assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"  # echoed, never "*"
        assert headers["Access-Control-Allow-Credentials"] == "true"
        assert "x-signalr-user-agent" in headers["Access-Control-Allow-Headers"]
        assert cors_headers("https://evil.example.com") == []
    with override_settings(SIGNALR_GROUPS={}):  # the same-origin default needs no CORS
        assert cors_headers("https://app.example.com") == []
