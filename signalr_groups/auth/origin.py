"""WebSocket Origin checks.

Browsers always send ``Origin`` on a WebSocket upgrade, and a cross-site page cannot suppress
it, so a browser connection is accepted only from an allowed origin (``ALLOWED_ORIGINS``, or by
default the hosts of ``ALLOWED_HOSTS``). A request *without* ``Origin`` does not come from a
browser: the official Node, .NET and Java clients, pysignalr and signalrcore send none. Such a
client cannot ride on a victim's cookies (the cross-site WebSocket hijacking attack needs a
browser), so it is accepted and authenticated like any other request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from signalr_groups.conf import get_hub_settings


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the WebSocket request in ``scope`` may connect (see the module docstring)."""
    raw = _header(scope, b"origin")
    if raw is None:
        return True
    try:
        origin = raw.decode("ascii")
        parsed = urlparse(origin)
    except (UnicodeDecodeError, ValueError):
        return False
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    allowed_origins = get_hub_settings().allowed_origins
    if allowed_origins is not None:
        normalized = f"{parsed.scheme}://{parsed.netloc}".lower()
        return "*" in allowed_origins or normalized in (item.rstrip("/").lower() for item in allowed_origins)
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(parsed.netloc)
    return bool(domain) and validate_host(domain, allowed_hosts)
