"""The demo's production settings: ``DJANGO_SETTINGS_MODULE=hubproject.settings_production``.

Everything secret or site-specific comes from the environment (see deploy/env.example); a missing
required value stops the process at start-up rather than running insecurely. ``manage.py check
--deploy`` is clean with these settings (tests/deploy checks it). TLS ends at nginx
(deploy/nginx-site.conf.template), which says so in ``X-Forwarded-Proto``.
"""

from __future__ import annotations

import os

from hubproject.settings import *  # noqa: F403 - the demo's settings, then what production changes
from hubproject.settings import SIGNALR_GROUPS as _DEMO_SIGNALR_GROUPS


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"{name} must be set for production (see deploy/env.example).")
    return value


DEBUG = False
SECRET_KEY = _required("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = _required("DJANGO_ALLOWED_HOSTS").split(",")
CSRF_TRUSTED_ORIGINS = [origin for origin in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if origin]
STATIC_ROOT = _required("DJANGO_STATIC_ROOT")

# TLS ends at nginx, which sets X-Forwarded-Proto; only nginx can reach the app processes (127.0.0.1).
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = True
# The load balancer's health checks and the metrics scraper talk to each process directly, in HTTP.
SECURE_REDIRECT_EXEMPT = [r"^signalr/health/", r"^signalr/metrics$"]
SECURE_HSTS_SECONDS = 31_536_000
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True

SIGNALR_GROUPS = {
    **_DEMO_SIGNALR_GROUPS,
    # Browser pages of the site's own origin only (ALLOWED_HOSTS); list others explicitly.
    "ALLOWED_ORIGINS": [origin for origin in os.environ.get("SIGNALR_ALLOWED_ORIGINS", "").split(",") if origin]
    or None,
    # Several processes share the Redis named by SIGNALR_REDIS_URL (REDIS_URL None reads it).
    "REDIS_URL": None,
    # A dropped socket (a phone switching networks) resumes without losing a message.
    "ALLOW_STATEFUL_RECONNECTS": True,
    # Anonymous connections and negotiations per address (behind nginx: the address from
    # X-Forwarded-For, trusted because the processes run with --proxy-headers).
    "MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS": 20,
    "MAX_NEGOTIATIONS_PER_SECOND_PER_ADDRESS": 20,
    # Thousands of connections per process: freeze what survives every 1,000 new ones, so that the
    # collector's full passes stay short (docs/performance.md, "Event-loop stalls").
    "GC_FREEZE_CONNECTIONS": 1000,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"signalr_groups": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
