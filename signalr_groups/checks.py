"""System checks for configuration mistakes. Ids are listed once in :data:`CHECK_IDS`."""

from __future__ import annotations

from typing import Any, Final

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from signalr_groups.backplane.redis_internals import missing_internals
from signalr_groups.conf import HubSettings, get_hub_settings
from signalr_groups.server.routing import HubHttpRouter

#: Every check id with what it means.
CHECK_IDS: Final = {
    "signalr_groups.E001": "SIGNALR_GROUPS is invalid",
    "signalr_groups.E002": "CHANNEL_LAYER names a layer missing from CHANNEL_LAYERS",
    "signalr_groups.E003": "the installed channels-redis lacks internals the app reads (see backplane/redis_internals.py)",
    "signalr_groups.W001": "KEEP_ALIVE_INTERVAL is more than half the official clients' 30 s server timeout",
    "signalr_groups.W002": "CLIENT_TIMEOUT is not longer than the clients' 15 s keep-alive interval",
    "signalr_groups.W003": "the in-memory channel layer has a capacity below 1000",
    "signalr_groups.W004": "RedisChannelLayer with redis-py 8's 5 s socket timeout, equal to its 5 s blocking pop",
    "signalr_groups.W005": "RedisChannelLayer group_expiry shorter than twice LAYER_GROUP_REFRESH_INTERVAL",
    "signalr_groups.W006": "MAX_GROUPS_PER_CONNECTION above 10,000: one client's disconnect then costs a long loop",
    "signalr_groups.W007": "MAX_MESSAGE_SIZE above 1 MiB, the largest frame daphne accepts (and uvicorn as the README runs it)",
    "signalr_groups.W008": "Server-Sent Events or long polling are enabled, but ASGI_APPLICATION routes no HubHttpRouter",
}
#: How deep :func:`_routes_hub_http` looks into nested ASGI applications.
_MAX_APP_DEPTH: Final = 8

#: channels_redis.core.RedisChannelLayer blocks on BZPOPMIN for this many seconds.
_REDIS_CORE_BRPOP_TIMEOUT: Final = 5


def _check_redis_internals(redis_url: str | None, layer_config: dict[str, Any]) -> list[checks.CheckMessage]:
    if not redis_url and not str(layer_config.get("BACKEND", "")).startswith("channels_redis."):
        return []
    missing = missing_internals()
    if not missing:
        return []
    return [
        checks.Error(
            "The installed channels-redis lacks internals signalr_groups reads to count acknowledgements "
            "and prune dead processes: " + ", ".join(missing),
            hint="Install a channels-redis version signalr_groups supports (see pyproject.toml).",
            id="signalr_groups.E003",
        )
    ]


def _redis_py_major() -> int:
    try:
        from importlib.metadata import version

        return int(version("redis").split(".")[0])
    except Exception:
        return 0


def _check_redis_core_timeouts(layer_config: dict[str, Any]) -> list[checks.CheckMessage]:
    if layer_config.get("BACKEND") != "channels_redis.core.RedisChannelLayer" or _redis_py_major() < 8:
        return []
    hosts = (layer_config.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
    for host in hosts:
        timeout = host.get("socket_timeout") if isinstance(host, dict) else None
        if timeout is not None and timeout > _REDIS_CORE_BRPOP_TIMEOUT:
            continue
        return [
            checks.Warning(
                "channels_redis' RedisChannelLayer waits 5 s on a blocking pop, and redis-py 8 times socket "
                "reads out after 5 s too: idle receives then fail with 'Timeout reading from ...', and a "
                "message popped at that instant can be lost.",
                hint='Give each host a longer socket timeout: "hosts": [{"address": "redis://...", '
                '"socket_timeout": 10}] (or use RedisPubSubChannelLayer).',
                id="signalr_groups.W004",
            )
        ]
    return []


def _routes_hub_http(app: Any, depth: int = 0) -> bool:
    """Whether a :class:`HubHttpRouter` is reachable from an ASGI application (through routers and middleware)."""
    if isinstance(app, HubHttpRouter):
        return True
    if depth >= _MAX_APP_DEPTH or app is None:
        return False
    mapping = getattr(app, "application_mapping", None)  # channels' ProtocolTypeRouter
    if isinstance(mapping, dict):
        return _routes_hub_http(mapping.get("http"), depth + 1)
    return any(_routes_hub_http(getattr(app, name, None), depth + 1) for name in ("inner", "app", "application"))


def _check_http_transports(hub_settings: HubSettings) -> list[checks.CheckMessage]:
    if all(names == ("WebSockets",) or not names for names in hub_settings.transports.values()):
        return []
    path = getattr(settings, "ASGI_APPLICATION", None)
    if not isinstance(path, str):
        return []
    try:
        application = import_string(path)
    except Exception:
        return []  # (Channels reports an application that cannot be imported)
    if _routes_hub_http(application):
        return []
    return [
        checks.Warning(
            "SIGNALR_GROUPS['TRANSPORTS'] enables Server-Sent Events or long polling, but the 'http' application "
            f"of {path} routes no HubHttpRouter: clients that cannot use WebSockets will fail to connect.",
            hint="Route '\"http\": HubHttpRouter(hub_urlpatterns, django_asgi_app)' in your ProtocolTypeRouter, "
            "or set SIGNALR_GROUPS['TRANSPORTS'] = ['WebSockets'].",
            id="signalr_groups.W008",
        )
    ]


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate ``SIGNALR_GROUPS`` and its relation to ``CHANNEL_LAYERS``."""
    try:
        hub_settings = get_hub_settings()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="signalr_groups.E001")]
    messages: list[checks.CheckMessage] = []
    layers = getattr(settings, "CHANNEL_LAYERS", {}) or {}
    if hub_settings.redis_url or hub_settings.redis_sentinels:
        pass  # REDIS_URL: the app builds its own channels-redis layer (CHANNEL_LAYER is not used)
    elif hub_settings.channel_layer not in layers:
        messages.append(
            checks.Error(
                f"SIGNALR_GROUPS['CHANNEL_LAYER'] is {hub_settings.channel_layer!r}, which CHANNEL_LAYERS does not define.",
                hint="Add it to CHANNEL_LAYERS (channels.layers.InMemoryChannelLayer for one process, "
                "channels_redis for several).",
                id="signalr_groups.E002",
            )
        )
    else:
        config = layers[hub_settings.channel_layer]
        messages.extend(_check_redis_core_timeouts(config))
        if config.get("BACKEND") == "channels_redis.core.RedisChannelLayer":
            expiry = (config.get("CONFIG") or {}).get("group_expiry", 86400)
            if expiry < 2 * hub_settings.layer_group_refresh_interval:
                messages.append(
                    checks.Warning(
                        f"RedisChannelLayer group_expiry ({expiry} s) is less than twice "
                        f"LAYER_GROUP_REFRESH_INTERVAL ({hub_settings.layer_group_refresh_interval:g} s): "
                        "live group memberships could expire before they are renewed.",
                        hint="Lower SIGNALR_GROUPS['LAYER_GROUP_REFRESH_INTERVAL'] or raise group_expiry.",
                        id="signalr_groups.W005",
                    )
                )
        if config.get("BACKEND") == "channels.layers.InMemoryChannelLayer":
            capacity = (config.get("CONFIG") or {}).get("capacity", 100)
            if capacity < 1000:
                messages.append(
                    checks.Warning(
                        f"The in-memory channel layer has capacity {capacity}: bursts from other event loops "
                        "beyond it are dropped silently by Channels.",
                        hint='Set CHANNEL_LAYERS[...]["CONFIG"]["capacity"] to 1000 or more.',
                        id="signalr_groups.W003",
                    )
                )
    own_redis = hub_settings.redis_url or ("sentinel" if hub_settings.redis_sentinels else None)
    messages.extend(_check_redis_internals(own_redis, layers.get(hub_settings.channel_layer) or {}))
    if hub_settings.max_groups_per_connection > 10_000:
        messages.append(
            checks.Warning(
                f"SIGNALR_GROUPS['MAX_GROUPS_PER_CONNECTION'] is {hub_settings.max_groups_per_connection}: one "
                "client can then make every disconnect or revocation walk that many groups.",
                hint="Keep it at 10,000 or less; use user-scoped groups for wide memberships.",
                id="signalr_groups.W006",
            )
        )
    if hub_settings.max_message_size > 1024 * 1024:
        messages.append(
            checks.Warning(
                f"SIGNALR_GROUPS['MAX_MESSAGE_SIZE'] is {hub_settings.max_message_size} bytes, above the 1 MiB "
                "frame daphne accepts: larger messages can never arrive there.",
                hint="Keep it at 1 MiB or less (and run uvicorn with --ws-max-size 1048576).",
                id="signalr_groups.W007",
            )
        )
    if hub_settings.keep_alive_interval > 15:
        messages.append(
            checks.Warning(
                "SIGNALR_GROUPS['KEEP_ALIVE_INTERVAL'] is above 15 s: the official clients drop a server "
                "that is silent for 30 s.",
                id="signalr_groups.W001",
            )
        )
    if hub_settings.client_timeout <= 15:
        messages.append(
            checks.Warning(
                "SIGNALR_GROUPS['CLIENT_TIMEOUT'] is 15 s or less: the official clients ping every 15 s, "
                "so idle clients would be dropped.",
                id="signalr_groups.W002",
            )
        )
    messages.extend(_check_http_transports(hub_settings))
    return messages
