"""WebSocket Origin checks.

Browsers always send ``Origin`` on a WebSocket upgrade, and a cross-site page cannot suppress
it, so a browser connection is accepted only from an allowed origin: one of ``ALLOWED_ORIGINS``
(scheme, host and port, exactly), or by default the page's own origin — the ``Origin`` names the
host and port the request was sent to (its ``Host`` header), that host is in ``ALLOWED_HOSTS``,
and a ``wss`` request comes from an ``https`` page. Another port or scheme on an allowed host is
another origin, as browsers define it. A request *without* ``Origin`` does not come from a
browser: the official Node, .NET and Java clients, pysignalr and signalrcore send none. Such a
client cannot ride on a victim's cookies (the cross-site WebSocket hijacking attack needs a
browser), so it is accepted and authenticated like any other request.
"""

from __future__ import annotations

from typing import Any, Final
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
    if get_hub_settings().allowed_origins is not None:
        return _in_allowed_origins(parsed.scheme, parsed.netloc)
    if not _same_origin(scope, parsed.scheme, parsed.netloc):
        return False
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(parsed.netloc)
    return bool(domain) and validate_host(domain, allowed_hosts)


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _same_origin(scope: dict[str, Any], scheme: str, netloc: str) -> bool:
    """Whether an origin (``scheme``, ``netloc``) is the one the request was made to (its Host header).

    A Host without a port matches the origin's default port, whatever the scheme: behind a proxy
    that ends TLS the socket is ``ws`` while the page is ``https`` on port 443.
    """
    forwarded = _header(scope, b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    # The first (client-facing) forwarded host, as Django reads it; else the Host header.
    raw_host = forwarded.split(b",")[0].strip() if forwarded is not None else _header(scope, b"host")
    if raw_host is None:
        return False
    try:
        host = raw_host.decode("ascii").lower()
    except UnicodeDecodeError:
        return False
    origin_domain, origin_port = split_domain_port(netloc.lower())
    host_domain, host_port = split_domain_port(host)
    if not origin_domain or origin_domain != host_domain:
        return False
    if scope.get("scheme") == "wss" and scheme != "https":
        return False
    return (origin_port or _DEFAULT_PORTS[scheme]) == (host_port or _DEFAULT_PORTS[scheme])


#: The request headers the official browser client sends with its cross-origin HTTP requests.
CORS_ALLOWED_HEADERS: Final = "authorization, content-type, x-requested-with, x-signalr-user-agent"
#: Seconds a browser may cache a preflight answer.
CORS_MAX_AGE: Final = "600"


def listed_origin(origin: str | None) -> str | None:
    """``origin`` if ``ALLOWED_ORIGINS`` lists it (or ``"*"``), else None.

    CORS is answered only for origins listed explicitly: the same-origin default needs none, and a
    page on another origin must be named to read negotiate's answer or use SSE and long polling.
    """
    allowed_origins = get_hub_settings().allowed_origins
    if origin is None or allowed_origins is None:
        return None
    try:
        parsed = urlparse(origin)
    except ValueError:
        return None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    return origin if _in_allowed_origins(parsed.scheme, parsed.netloc) else None


def _in_allowed_origins(scheme: str, netloc: str) -> bool:
    """Whether ``ALLOWED_ORIGINS`` (set) lists the origin ``scheme://netloc`` (or ``"*"``), case-insensitively."""
    allowed_origins = get_hub_settings().allowed_origins or ()
    normalized = f"{scheme}://{netloc}".lower()
    return "*" in allowed_origins or normalized in (item.rstrip("/").lower() for item in allowed_origins)


def cors_headers(origin: str | None, *, preflight: bool = False) -> list[tuple[str, str]]:
    """The CORS response headers for a request from ``origin`` (none if it is not listed).

    With credentials (the official client sends cookies: ``withCredentials``), so the origin is
    echoed, never ``*``.
    """
    allowed = listed_origin(origin)
    if allowed is None:
        return []
    headers = [
        ("Access-Control-Allow-Origin", allowed),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
            ("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS),
            ("Access-Control-Max-Age", CORS_MAX_AGE),
        ]
    return headers
