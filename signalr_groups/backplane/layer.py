"""Access to the configured channel layer, and what we may know about who listens on it."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, Final

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings

from signalr_groups.conf import get_hub_settings

#: Capacity of each channel of a RedisChannelLayer built from REDIS_URL: a process's one channel
#: carries every message for that process, so the default of 100 is far too small.
REDIS_CORE_CAPACITY: Final = 10_000

_redis_layers: dict[tuple[str, str], Any] = {}
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = weakref.WeakKeyDictionary()


def get_layer() -> Any:
    """Return the channel layer the app uses, or ``None``.

    With ``SIGNALR_GROUPS['REDIS_URL']`` (or ``$SIGNALR_REDIS_URL``) it is a channels-redis layer
    built for that URL (one per process, as Channels keeps its own); otherwise the layer named by
    ``SIGNALR_GROUPS['CHANNEL_LAYER']`` in ``CHANNEL_LAYERS``.
    """
    hub_settings = get_hub_settings()
    url = _own_redis()
    if url is not None:
        key = (url, hub_settings.redis_layer)
        layer = _redis_layers.get(key)
        if layer is None:
            layer = _redis_layers[key] = build_redis_layer(*key)
        return layer
    return get_channel_layer(hub_settings.channel_layer)


#: The scheme of the pseudo-URL that names a Redis reached through Sentinel (``REDIS_SENTINELS``).
SENTINEL_SCHEME: Final = "sentinel://"


def sentinel_url(sentinels: tuple[tuple[str, int], ...], master: str) -> str:
    """``sentinel://host:port,host:port/master``: one string for a Sentinel-watched master."""
    return SENTINEL_SCHEME + ",".join(f"{host}:{port}" for host, port in sentinels) + "/" + master


def _parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str]:
    hosts, _, master = url[len(SENTINEL_SCHEME) :].partition("/")
    pairs = [item.rpartition(":") for item in hosts.split(",")]
    return [(host, int(port)) for host, _, port in pairs], master


def _own_redis() -> str | None:
    """The Redis the app builds its own layer for: ``REDIS_SENTINELS`` (as a pseudo-URL), else ``REDIS_URL``."""
    hub_settings = get_hub_settings()
    if hub_settings.redis_sentinels:
        return sentinel_url(hub_settings.redis_sentinels, hub_settings.redis_sentinel_master)
    return hub_settings.redis_url


def _host(url: str, **options: Any) -> dict[str, Any]:
    """A channels-redis ``hosts`` entry: an address, or the sentinels and the master's name."""
    if url.startswith(SENTINEL_SCHEME):
        sentinels, master = _parse_sentinel_url(url)
        return {"sentinels": sentinels, "master_name": master, "sentinel_kwargs": {"socket_timeout": 5}, **options}
    return {"address": url, **options}


def build_redis_layer(url: str, kind: str) -> Any:
    """A channels-redis layer for ``url``: ``"pubsub"`` or ``"core"`` (configured as the README advises)."""
    # channels-redis is an optional dependency (the "redis" extra): imported only when asked for.
    if kind == "core":
        from channels_redis.core import RedisChannelLayer

        # A socket timeout above the layer's 5 s blocking pop (see check W004); a health check
        # (PING) before reusing a connection idle for a second, so that a pooled connection from
        # before a Redis restart is replaced instead of failing the next send.
        host = _host(url, socket_timeout=10)
        return RedisChannelLayer(hosts=[host], capacity=REDIS_CORE_CAPACITY)
    from channels_redis.pubsub import RedisPubSubChannelLayer

    # Timeouts, so that a send during a network partition fails instead of hanging.
    return RedisPubSubChannelLayer(hosts=[_host(url, socket_connect_timeout=5, socket_timeout=10)])


def layer_kind(layer: Any) -> str:
    """The dotted class path of a layer (``"channels_redis.core.RedisChannelLayer"``, ...)."""
    kind = type(layer)
    return f"{kind.__module__}.{kind.__qualname__}"


def is_redis_core(layer: Any) -> bool:
    """Whether ``layer`` is channels-redis' ``RedisChannelLayer`` (which keeps group members in Redis)."""
    return layer_kind(layer) == "channels_redis.core.RedisChannelLayer"


def is_redis_pubsub(layer: Any) -> bool:
    """Whether ``layer`` is channels-redis' ``RedisPubSubChannelLayer`` (which counts subscribers only)."""
    return layer_kind(layer) == "channels_redis.pubsub.RedisPubSubChannelLayer"


def shared_redis_url() -> str | None:
    """The Redis every server process shares, if any: ``REDIS_SENTINELS`` (a ``sentinel://`` pseudo-URL) or
    ``REDIS_URL``, else the channels-redis layer's first host.

    It holds what must be shared beyond the channel layer: single-use claims of connection
    tokens and the heartbeats of live processes.
    """
    hub_settings = get_hub_settings()
    own = _own_redis()
    if own is not None:
        return own
    config = (getattr(settings, "CHANNEL_LAYERS", {}) or {}).get(hub_settings.channel_layer) or {}
    if not str(config.get("BACKEND", "")).startswith("channels_redis."):
        return None
    hosts = (config.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
    host = hosts[0]
    address = host.get("address") if isinstance(host, dict) else host
    if isinstance(address, (tuple, list)) and len(address) == 2:  # ("127.0.0.1", 6379), as the docs show
        return f"redis://{address[0]}:{address[1]}"
    if isinstance(host, dict) and "host" in host:
        return f"redis://{host['host']}:{host.get('port', 6379)}/{host.get('db', 0)}"
    return address if isinstance(address, str) else None


def redis_client(url: str) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` in the running event loop (cached per loop)."""
    from redis import asyncio as aioredis  # installed with channels-redis, which this path requires

    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    client = clients.get(url)
    if client is None:
        options: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 1}
        if url.startswith(SENTINEL_SCHEME):
            from redis.asyncio.sentinel import Sentinel

            sentinels, master = _parse_sentinel_url(url)
            sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": 5})  # type: ignore[no-untyped-call]
            client = sentinel.master_for(master, **options)
        else:
            client = aioredis.Redis.from_url(url, **options)
        clients[url] = client
    return client


async def redis_now(client: Any) -> float:
    """Redis's own clock (``TIME``): heartbeats compare times written by different hosts."""
    seconds, microseconds = await client.time()
    return float(seconds) + float(microseconds) / 1_000_000


def in_memory_members(layer: Any, group: str) -> frozenset[str] | None:
    """The member channels of a group of the in-process ``InMemoryChannelLayer``; None for other layers."""
    if isinstance(layer, InMemoryChannelLayer):
        return frozenset(layer.groups.get(group, {}))
    return None


def may_have_other_members(layer: Any, group: str, own_channel: str | None) -> bool:
    """Whether a layer group might hold a channel other than ``own_channel``.

    The in-memory layer lives in this process, so we can look; for any other layer (Redis) we
    must assume other processes listen. This lets a single-process deployment skip the layer
    entirely on the hot path, while a scaled-out one still sends exactly one layer message.
    """
    members = in_memory_members(layer, group)
    if members is None:
        return True
    return any(channel != own_channel for channel in members)


#: Seconds :func:`release_channel` waits for the layer's clean-up.
RELEASE_TIMEOUT: Final = 2.0


async def release_channel(layer: Any, channel: str) -> None:
    """Free a one-off reply channel.

    Channels has no "delete channel" call; layers clean up when a ``receive`` is cancelled
    (``RedisPubSubChannelLayer`` unsubscribes then), so start one and cancel it.
    """
    waiter = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    waiter.cancel()
    waiter.add_done_callback(lambda task: task.cancelled() or task.exception())  # (retrieved: never logged)
    # Bounded: a layer whose clean-up hangs (a Redis that stopped answering) must not hold us.
    await asyncio.wait({waiter}, timeout=RELEASE_TIMEOUT)
