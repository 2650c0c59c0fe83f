"""The ``SIGNALR_GROUPS`` settings dict, read lazily and validated once.

Never read at import time: :func:`get_hub_settings` merges the dict over :data:`DEFAULTS`
on first use and caches the result; the cache is cleared whenever Django's settings change
(``override_settings`` in tests).
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

#: Every key ``SIGNALR_GROUPS`` accepts, with its default.
DEFAULTS: Final[dict[str, Any]] = {
    "CHANNEL_LAYER": "default",
    "USER_ID_PROVIDER": "signalr_groups.users.default_user_id",
    "DETAILED_ERRORS": False,
    "KEEP_ALIVE_INTERVAL": 15.0,
    "CLIENT_TIMEOUT": 30.0,
    "HANDSHAKE_TIMEOUT": 15.0,
    "MAX_MESSAGE_SIZE": 32 * 1024,
    "MAX_GROUP_NAME_LENGTH": 256,
    "MAX_PENDING_INVOCATIONS": 100,
    #: Invocations of one connection that run at once (1: one at a time, in order, as ASP.NET Core's default).
    "MAX_PARALLEL_INVOCATIONS_PER_CLIENT": 1,
    "OUTBOX_MAX_BYTES": 1024 * 1024,
    #: Connections one user (identifier) may hold to one hub on one server process.
    "MAX_CONNECTIONS_PER_USER": 100,
    #: Groups one connection may be in at once.
    "MAX_GROUPS_PER_CONNECTION": 1000,
    #: Opt-in limits (None: off). Behind a proxy, per-address limits need its client address
    #: (daphne/uvicorn --proxy-headers), or every client shares the proxy's.
    "MAX_INVOCATIONS_PER_SECOND": None,
    "MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS": None,
    "MAX_NEGOTIATIONS_PER_SECOND_PER_ADDRESS": None,
    "NEGOTIATE_TOKEN_MAX_AGE": 60.0,
    "GROUP_ACTION_TIMEOUT": 5.0,
    "ALLOWED_ORIGINS": None,
    "HEARTBEAT_INTERVAL": 1.0,
    "LAYER_GROUP_REFRESH_INTERVAL": 900.0,
    "ACCESS_TOKEN_LIFETIME": 3600.0,
    "MIN_NEGOTIATE_VERSION": 0,
    "DEFAULT_PERMISSION_CLASSES": (),
    #: A Redis URL moves the app to channels-redis (None: the SIGNALR_REDIS_URL environment
    #: variable, if set; "": never). CHANNEL_LAYER is then not used.
    "REDIS_URL": None,
    #: Which channels-redis layer REDIS_URL builds: "pubsub" (RedisPubSubChannelLayer) or "core".
    "REDIS_LAYER": "pubsub",
    #: Redis Sentinel instead of REDIS_URL: ["host:port", ...] of the sentinels, and the name of
    #: the master they watch. The app then follows the master through failovers.
    "REDIS_SENTINELS": None,
    "REDIS_SENTINEL_MASTER": "mymaster",
    #: The transports negotiate offers, in this order of preference (``HttpConnectionDispatcherOptions.Transports``):
    #: a list for every hub, or a dict of hub key -> list, with ``"*"`` for the hubs not named.
    "TRANSPORTS": ("WebSockets", "ServerSentEvents", "LongPolling"),
    #: The hub protocols clients may choose in the handshake (``HubOptions.SupportedProtocols``).
    "PROTOCOLS": ("json", "messagepack"),
    #: Seconds a long poll waits for data before it returns empty (``LongPolling.PollTimeout``).
    "LONG_POLLING_POLL_TIMEOUT": 90.0,
    #: Seconds a long-polling connection lives without a poll, and a stateful-reconnect connection
    #: without a socket (``ConnectionOptions.DisconnectTimeout``).
    "DISCONNECT_TIMEOUT": 15.0,
    #: Stateful reconnect (``AllowStatefulReconnects``, opt-in as in ASP.NET Core): True for every hub,
    #: or a list of the hub keys that allow it.
    "ALLOW_STATEFUL_RECONNECTS": False,
    #: Bytes of sent messages kept until the client acknowledges them; a full buffer holds the
    #: writer (``StatefulReconnectBufferSize``).
    "STATEFUL_RECONNECT_BUFFER_SIZE": 100_000,
    #: Connections one user (anonymous: one address) may have waiting for a reconnect, per hub and process.
    "MAX_HELD_CONNECTIONS_PER_USER": 10,
    #: Items of one client upload stream buffered before the server stops reading the connection.
    "STREAM_BUFFER_CAPACITY": 10,
    #: Streaming calls (server streams, calls with upload streams) one connection may run at once.
    "MAX_STREAMS_PER_CONNECTION": 100,
    #: Filters around every hub's calls, connects and disconnects (instances, classes or import paths),
    #: before each hub's own ``Hub.filters``: see ``signalr_groups.hubs.filters``.
    "HUB_FILTERS": (),
    #: Seconds ``clients.client(id).invoke(...)`` waits for the client's answer, unless given ``timeout``.
    "CLIENT_RESULT_TIMEOUT": 30.0,
    #: Prometheus metrics (``signalr_groups.metrics``): collected when True.
    "METRICS": True,
    #: Client addresses the metrics view answers without a staff login (behind a proxy: the proxy's).
    "METRICS_ALLOWED_ADDRESSES": ("127.0.0.1", "::1"),
    #: Seconds a SIGTERM waits for the connections to close (Close with allowReconnect) before the
    #: server's own shutdown; keep it below the server's (daphne --application-close-timeout, 10 s).
    "SHUTDOWN_DRAIN_TIMEOUT": 5.0,
    #: New connections after which the heartbeat freezes what survives (``lifetime/gc_policy.py``); None: never.
    "GC_FREEZE_CONNECTIONS": None,
}
#: Every transport, in the order negotiate lists them.
TRANSPORT_NAMES: Final = ("WebSockets", "ServerSentEvents", "LongPolling")
#: Every hub protocol this server speaks.
PROTOCOL_NAMES: Final = ("json", "messagepack")
#: The environment variable that REDIS_URL defaults to.
REDIS_URL_ENV: Final = "SIGNALR_REDIS_URL"
REDIS_LAYERS: Final = ("pubsub", "core")

_POSITIVE_NUMBERS: Final = (
    "KEEP_ALIVE_INTERVAL",
    "CLIENT_TIMEOUT",
    "HANDSHAKE_TIMEOUT",
    "NEGOTIATE_TOKEN_MAX_AGE",
    "GROUP_ACTION_TIMEOUT",
    "HEARTBEAT_INTERVAL",
    "LAYER_GROUP_REFRESH_INTERVAL",
    "ACCESS_TOKEN_LIFETIME",
    "LONG_POLLING_POLL_TIMEOUT",
    "DISCONNECT_TIMEOUT",
    "CLIENT_RESULT_TIMEOUT",
    "SHUTDOWN_DRAIN_TIMEOUT",
)
_POSITIVE_INTS: Final = (
    "MAX_MESSAGE_SIZE",
    "MAX_GROUP_NAME_LENGTH",
    "MAX_PENDING_INVOCATIONS",
    "MAX_PARALLEL_INVOCATIONS_PER_CLIENT",
    "OUTBOX_MAX_BYTES",
    "MAX_CONNECTIONS_PER_USER",
    "MAX_GROUPS_PER_CONNECTION",
    "STREAM_BUFFER_CAPACITY",
    "MAX_STREAMS_PER_CONNECTION",
    "STATEFUL_RECONNECT_BUFFER_SIZE",
    "MAX_HELD_CONNECTIONS_PER_USER",
)


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Validated ``SIGNALR_GROUPS`` values. Times are seconds, sizes bytes (see README)."""

    channel_layer: str
    user_id_provider: Callable[..., Any]
    detailed_errors: bool
    keep_alive_interval: float
    client_timeout: float
    handshake_timeout: float
    max_message_size: int
    max_group_name_length: int
    max_pending_invocations: int
    max_parallel_invocations_per_client: int
    outbox_max_bytes: int
    max_connections_per_user: int
    max_groups_per_connection: int
    max_invocations_per_second: float | None
    max_anonymous_connections_per_address: int | None
    max_negotiations_per_second_per_address: float | None
    negotiate_token_max_age: float
    group_action_timeout: float
    allowed_origins: tuple[str, ...] | None
    heartbeat_interval: float
    layer_group_refresh_interval: float
    access_token_lifetime: float
    min_negotiate_version: int
    default_permission_classes: tuple[Any, ...]
    redis_url: str | None
    redis_layer: str
    redis_sentinels: tuple[tuple[str, int], ...] | None
    redis_sentinel_master: str
    #: Enabled transports: hub key -> names (``"*"``: every other hub), in negotiate's order.
    transports: dict[str, tuple[str, ...]]
    protocols: tuple[str, ...]
    long_polling_poll_timeout: float
    disconnect_timeout: float
    stream_buffer_capacity: int
    max_streams_per_connection: int
    hub_filters: tuple[Any, ...]
    client_result_timeout: float
    #: True (every hub), or the hub keys that allow stateful reconnect.
    allow_stateful_reconnects: bool | frozenset[str]
    stateful_reconnect_buffer_size: int
    max_held_connections_per_user: int
    metrics: bool
    metrics_allowed_addresses: frozenset[str]
    shutdown_drain_timeout: float
    gc_freeze_connections: int | None

    def transports_for(self, hub_key: str) -> tuple[str, ...]:
        """The transports enabled for the hub ``hub_key``."""
        found = self.transports.get(hub_key)
        return found if found is not None else self.transports.get("*", ())

    def stateful_reconnects_for(self, hub_key: str) -> bool:
        """Whether the hub ``hub_key`` allows stateful reconnect."""
        allowed = self.allow_stateful_reconnects
        return allowed if isinstance(allowed, bool) else hub_key in allowed


def _optional(values: dict[str, Any], key: str, kind: type[int] | type[float]) -> Any:
    """An opt-in limit: None (off), or a positive number (an integer where ``kind`` is int)."""
    value = values[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ImproperlyConfigured(f"SIGNALR_GROUPS[{key!r}] must be None or a positive number, got {value!r}.")
    if kind is int and not isinstance(value, int):
        raise ImproperlyConfigured(f"SIGNALR_GROUPS[{key!r}] must be None or a positive integer, got {value!r}.")
    return kind(value)


def _sentinels(value: Any) -> tuple[tuple[str, int], ...] | None:
    """``["host:port", ...]`` (or ``(host, port)`` pairs) as ``((host, port), ...)``; None when unset."""
    if value is None or value == [] or value == ():
        return None
    problem = "SIGNALR_GROUPS['REDIS_SENTINELS'] must be a list of 'host:port' strings"
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(f"{problem}, got {value!r}.")
    result: list[tuple[str, int]] = []
    for item in value:
        host, _, port = item.rpartition(":") if isinstance(item, str) else (None, None, None)
        if isinstance(item, (list, tuple)) and len(item) == 2:
            host, port = item
        try:
            number = int(port)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ImproperlyConfigured(f"{problem}, got {item!r}.") from None
        if not host or not 0 < number < 65536:
            raise ImproperlyConfigured(f"{problem}, got {item!r}.")
        result.append((str(host), number))
    return tuple(result)


def _sentinel_master(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured("SIGNALR_GROUPS['REDIS_SENTINEL_MASTER'] must be the master's name (a string).")
    return value


def _transport_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(f"{where} must be a list of transports from {', '.join(TRANSPORT_NAMES)}.")
    unknown = [item for item in value if item not in TRANSPORT_NAMES]
    if unknown:
        raise ImproperlyConfigured(
            f"{where} names unknown transport(s) {', '.join(map(repr, unknown))}; known: {', '.join(TRANSPORT_NAMES)}."
        )
    return tuple(name for name in TRANSPORT_NAMES if name in value)


def _transports(value: Any) -> dict[str, tuple[str, ...]]:
    """``TRANSPORTS``: a list for every hub, or ``{hub_key: list, "*": list}``."""
    if isinstance(value, dict):
        result = {
            str(key): _transport_list(item, f"SIGNALR_GROUPS['TRANSPORTS'][{key!r}]") for key, item in value.items()
        }
        result.setdefault("*", TRANSPORT_NAMES)
        return result
    return {"*": _transport_list(value, "SIGNALR_GROUPS['TRANSPORTS']")}


def _protocols(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ImproperlyConfigured(
            f"SIGNALR_GROUPS['PROTOCOLS'] must be a non-empty list from {', '.join(PROTOCOL_NAMES)}."
        )
    names = [str(item).lower() for item in value]
    unknown = [name for name in names if name not in PROTOCOL_NAMES]
    if unknown:
        raise ImproperlyConfigured(
            f"SIGNALR_GROUPS['PROTOCOLS'] names unknown protocol(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(PROTOCOL_NAMES)}."
        )
    return tuple(name for name in PROTOCOL_NAMES if name in names)


def _hub_filters(value: Any) -> tuple[Any, ...]:
    """``HUB_FILTERS``: each an instance, a class (made once, with no arguments) or the import path of either."""
    where = "SIGNALR_GROUPS['HUB_FILTERS']"
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ImproperlyConfigured(f"{where} must be a list of hub filters (instances, classes or import paths).")
    filters: list[Any] = []
    for item in value:
        try:
            resolved = import_string(item) if isinstance(item, str) else item
        except ImportError as exc:
            raise ImproperlyConfigured(f"{where} entry {item!r} cannot be imported: {exc}") from exc
        instance = resolved() if isinstance(resolved, type) else resolved
        if not any(callable(getattr(instance, name, None)) for name in ("invoke", "on_connected", "on_disconnected")):
            raise ImproperlyConfigured(
                f"{where} entry {item!r} is not a hub filter (it has none of invoke, on_connected, on_disconnected)."
            )
        filters.append(instance)
    return tuple(filters)


def _bool(values: dict[str, Any], key: str) -> bool:
    value = values[key]
    if not isinstance(value, bool):
        raise ImproperlyConfigured(f"SIGNALR_GROUPS[{key!r}] must be True or False, got {value!r}.")
    return value


def _addresses(value: Any) -> frozenset[str]:
    """``METRICS_ALLOWED_ADDRESSES``: a list of IP addresses."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ImproperlyConfigured("SIGNALR_GROUPS['METRICS_ALLOWED_ADDRESSES'] must be a list of IP addresses.")
    addresses = set()
    for item in value:
        try:
            addresses.add(str(ipaddress.ip_address(item)))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"SIGNALR_GROUPS['METRICS_ALLOWED_ADDRESSES'] has {item!r}, which is not an IP address."
            ) from exc
    return frozenset(addresses)


def _stateful(value: Any) -> bool | frozenset[str]:
    """``ALLOW_STATEFUL_RECONNECTS``: a bool, or a list of hub keys."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise ImproperlyConfigured(
        f"SIGNALR_GROUPS['ALLOW_STATEFUL_RECONNECTS'] must be True, False or a list of hub keys, got {value!r}."
    )


def _validate(raw: dict[str, Any]) -> HubSettings:
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ImproperlyConfigured(
            f"SIGNALR_GROUPS has unknown key(s): {', '.join(unknown)}. Known keys: {', '.join(sorted(DEFAULTS))}."
        )
    values = {**DEFAULTS, **raw}
    for key in _POSITIVE_NUMBERS:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ImproperlyConfigured(f"SIGNALR_GROUPS[{key!r}] must be a positive number, got {value!r}.")
    for key in _POSITIVE_INTS:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ImproperlyConfigured(f"SIGNALR_GROUPS[{key!r}] must be a positive integer, got {value!r}.")
    minimum = values["MIN_NEGOTIATE_VERSION"]
    if isinstance(minimum, bool) or minimum not in (0, 1):
        raise ImproperlyConfigured("SIGNALR_GROUPS['MIN_NEGOTIATE_VERSION'] must be 0 or 1.")
    if not isinstance(values["DETAILED_ERRORS"], bool):
        raise ImproperlyConfigured("SIGNALR_GROUPS['DETAILED_ERRORS'] must be True or False.")
    if not isinstance(values["CHANNEL_LAYER"], str):
        raise ImproperlyConfigured("SIGNALR_GROUPS['CHANNEL_LAYER'] must be a channel layer alias (a string).")
    origins = values["ALLOWED_ORIGINS"]
    if origins is not None and (isinstance(origins, str) or not all(isinstance(item, str) for item in origins)):
        raise ImproperlyConfigured(
            "SIGNALR_GROUPS['ALLOWED_ORIGINS'] must be None (use ALLOWED_HOSTS) or a list of origins "
            "such as 'https://example.com'."
        )
    provider = values["USER_ID_PROVIDER"]
    if isinstance(provider, str):
        try:
            provider = import_string(provider)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"SIGNALR_GROUPS['USER_ID_PROVIDER'] = {values['USER_ID_PROVIDER']!r} cannot be imported: {exc}"
            ) from exc
    permissions = values["DEFAULT_PERMISSION_CLASSES"]
    if isinstance(permissions, str) or not isinstance(permissions, (list, tuple)):
        raise ImproperlyConfigured("SIGNALR_GROUPS['DEFAULT_PERMISSION_CLASSES'] must be a list of import paths.")
    resolved_permissions: list[Any] = []
    for item in permissions:
        try:
            resolved_permissions.append(import_string(item) if isinstance(item, str) else item)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"SIGNALR_GROUPS['DEFAULT_PERMISSION_CLASSES'] entry {item!r} cannot be imported: {exc}"
            ) from exc
    redis_url = values["REDIS_URL"]
    if redis_url is None:
        redis_url = os.environ.get(REDIS_URL_ENV) or None
    if redis_url is not None and (
        not isinstance(redis_url, str) or (redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")))
    ):
        raise ImproperlyConfigured(
            f"SIGNALR_GROUPS['REDIS_URL'] (or ${REDIS_URL_ENV}) must be a redis://, rediss:// or unix:// URL, "
            f"got {redis_url!r}."
        )
    if values["REDIS_LAYER"] not in REDIS_LAYERS:
        raise ImproperlyConfigured(
            f"SIGNALR_GROUPS['REDIS_LAYER'] must be one of {', '.join(REDIS_LAYERS)}, got {values['REDIS_LAYER']!r}."
        )
    if not callable(provider):
        raise ImproperlyConfigured("SIGNALR_GROUPS['USER_ID_PROVIDER'] must be a callable or its import path.")
    return HubSettings(
        channel_layer=values["CHANNEL_LAYER"],
        user_id_provider=provider,
        detailed_errors=values["DETAILED_ERRORS"],
        keep_alive_interval=float(values["KEEP_ALIVE_INTERVAL"]),
        client_timeout=float(values["CLIENT_TIMEOUT"]),
        handshake_timeout=float(values["HANDSHAKE_TIMEOUT"]),
        max_message_size=values["MAX_MESSAGE_SIZE"],
        max_group_name_length=values["MAX_GROUP_NAME_LENGTH"],
        max_pending_invocations=values["MAX_PENDING_INVOCATIONS"],
        max_parallel_invocations_per_client=values["MAX_PARALLEL_INVOCATIONS_PER_CLIENT"],
        outbox_max_bytes=values["OUTBOX_MAX_BYTES"],
        max_connections_per_user=values["MAX_CONNECTIONS_PER_USER"],
        max_groups_per_connection=values["MAX_GROUPS_PER_CONNECTION"],
        max_invocations_per_second=_optional(values, "MAX_INVOCATIONS_PER_SECOND", float),
        max_anonymous_connections_per_address=_optional(values, "MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS", int),
        max_negotiations_per_second_per_address=_optional(values, "MAX_NEGOTIATIONS_PER_SECOND_PER_ADDRESS", float),
        negotiate_token_max_age=float(values["NEGOTIATE_TOKEN_MAX_AGE"]),
        group_action_timeout=float(values["GROUP_ACTION_TIMEOUT"]),
        allowed_origins=None if origins is None else tuple(origins),
        heartbeat_interval=float(values["HEARTBEAT_INTERVAL"]),
        layer_group_refresh_interval=float(values["LAYER_GROUP_REFRESH_INTERVAL"]),
        access_token_lifetime=float(values["ACCESS_TOKEN_LIFETIME"]),
        min_negotiate_version=values["MIN_NEGOTIATE_VERSION"],
        default_permission_classes=tuple(resolved_permissions),
        redis_url=redis_url or None,
        redis_layer=values["REDIS_LAYER"],
        redis_sentinels=_sentinels(values["REDIS_SENTINELS"]),
        redis_sentinel_master=_sentinel_master(values["REDIS_SENTINEL_MASTER"]),
        transports=_transports(values["TRANSPORTS"]),
        protocols=_protocols(values["PROTOCOLS"]),
        long_polling_poll_timeout=float(values["LONG_POLLING_POLL_TIMEOUT"]),
        disconnect_timeout=float(values["DISCONNECT_TIMEOUT"]),
        stream_buffer_capacity=values["STREAM_BUFFER_CAPACITY"],
        max_streams_per_connection=values["MAX_STREAMS_PER_CONNECTION"],
        hub_filters=_hub_filters(values["HUB_FILTERS"]),
        client_result_timeout=float(values["CLIENT_RESULT_TIMEOUT"]),
        allow_stateful_reconnects=_stateful(values["ALLOW_STATEFUL_RECONNECTS"]),
        stateful_reconnect_buffer_size=values["STATEFUL_RECONNECT_BUFFER_SIZE"],
        max_held_connections_per_user=values["MAX_HELD_CONNECTIONS_PER_USER"],
        metrics=_bool(values, "METRICS"),
        metrics_allowed_addresses=_addresses(values["METRICS_ALLOWED_ADDRESSES"]),
        shutdown_drain_timeout=float(values["SHUTDOWN_DRAIN_TIMEOUT"]),
        gc_freeze_connections=_optional(values, "GC_FREEZE_CONNECTIONS", int),
    )


@functools.cache
def get_hub_settings() -> HubSettings:
    """Return the validated settings; raises ``ImproperlyConfigured`` on a bad ``SIGNALR_GROUPS``."""
    raw = getattr(settings, "SIGNALR_GROUPS", None) or {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured("SIGNALR_GROUPS must be a dict.")
    return _validate(raw)


@receiver(setting_changed)
def _clear_cache(*, setting: str, **kwargs: Any) -> None:
    if setting == "SIGNALR_GROUPS":
        get_hub_settings.cache_clear()
