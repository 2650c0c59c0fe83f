"""Django settings for the benchmark servers (our hub and the plain Channels consumer).

The channel layer comes from the environment: ``BENCH_LAYER`` = ``memory`` (default), ``redis``
(``RedisChannelLayer``) or ``pubsub`` (``RedisPubSubChannelLayer``), with ``BENCH_REDIS_URL``.
No database is touched by the bench hubs; SQLite in a temporary file keeps Django happy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SECRET_KEY = "bench-only-secret-key"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "channels",
    "signalr_groups",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.urls"
ASGI_APPLICATION = "bench.asgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("BENCH_DB") or str(Path(tempfile.gettempdir()) / "signalr_groups_bench.sqlite3"),
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_LAYER = os.environ.get("BENCH_LAYER", "memory")
_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "")
if _LAYER == "redis":
    # redis-py 8 needs a socket_timeout above the layer's 5 s blocking pops.
    CHANNEL_LAYERS: dict[str, dict[str, object]] = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": _REDIS_URL, "socket_timeout": 10}], "capacity": 10000},
        }
    }
elif _LAYER == "pubsub":
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [_REDIS_URL]}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

SIGNALR_GROUPS: dict[str, object] = {
    "USER_ID_PROVIDER": "bench.hubs.query_user_id",
    # BENCH_METRICS=0: Prometheus metrics off (the hub-uvicorn-nometrics implementation).
    "METRICS": os.environ.get("BENCH_METRICS", "1") != "0",
    # BENCH_GC_FREEZE (hub-uvicorn-lean, as hubproject/settings_production.py): freeze what survives every
    # 1,000 new connections, so that the collector's full passes stay short.
    "GC_FREEZE_CONNECTIONS": int(os.environ["BENCH_GC_FREEZE"]) if os.environ.get("BENCH_GC_FREEZE") else None,
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"signalr_groups": {"handlers": ["console"], "level": "WARNING"}},
}

if os.environ.get("BENCH_GC_LOG"):  # diagnostics: log every garbage-collector pause over 5 ms to stderr
    import gc
    import sys
    import time

    _gc_started: list[float] = [0.0]

    def _gc_timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _gc_started[0] = time.perf_counter()
            return
        pause = (time.perf_counter() - _gc_started[0]) * 1000
        if pause > 5:
            print(
                f"gc generation {info['generation']} paused {pause:.1f} ms, collected {info['collected']}",
                file=sys.stderr,
                flush=True,
            )

    gc.callbacks.append(_gc_timer)

if os.environ.get("BENCH_TRACEMALLOC"):  # diagnostics: SIGUSR1 prints the top allocation sites to stderr
    import signal
    import sys
    import tracemalloc

    tracemalloc.start(int(os.environ["BENCH_TRACEMALLOC"]))

    def _dump(signum: int, frame: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        for stat in snapshot.statistics("traceback" if int(os.environ["BENCH_TRACEMALLOC"]) > 1 else "lineno")[:40]:
            print(
                f"{stat.size / 1024:10.0f} KiB {stat.count:8d} blocks  {stat.traceback.format()[-1].strip()}",
                file=sys.stderr,
            )
        print("tracemalloc-done", file=sys.stderr, flush=True)

    signal.signal(signal.SIGUSR1, _dump)
