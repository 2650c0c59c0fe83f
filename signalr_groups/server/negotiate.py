"""The HTTP endpoints: negotiate (``POST <hub>/negotiate``) and the access-token view."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import authenticate
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from signalr_groups.auth.access_tokens import issue_access_token
from signalr_groups.auth.connection_tokens import issue
from signalr_groups.auth.identity import bearer_from_header, session_user, user_from_token
from signalr_groups.auth.origin import cors_headers, listed_origin
from signalr_groups.auth.permissions import check_permissions
from signalr_groups.conf import get_hub_settings
from signalr_groups.hubs.hub import Hub
from signalr_groups.rate_limits import KeyedRateLimiter, address_key
from signalr_groups.server import shutdown

logger = logging.getLogger(__name__)

#: Highest negotiate version this server speaks.
MAX_NEGOTIATE_VERSION = 1
#: The transfer formats of each transport, as ASP.NET Core lists them.
TRANSFER_FORMATS: dict[str, list[str]] = {
    "WebSockets": ["Text", "Binary"],
    "ServerSentEvents": ["Text"],
    "LongPolling": ["Text", "Binary"],
}


def available_transports(hub_key: str) -> list[dict[str, Any]]:
    """Negotiate's ``availableTransports`` for a hub: its enabled transports, in preference order."""
    return [
        {"transport": name, "transferFormats": list(TRANSFER_FORMATS[name])}
        for name in get_hub_settings().transports_for(hub_key)
    ]


def _requested_version(request: HttpRequest) -> int | str:
    for key in request.GET:
        value = request.GET.get(key, "")
        if key.lower() == "negotiateversion":
            try:
                return int(value)
            except ValueError:
                return "The client requested a non-integer protocol version."
    return 0


def _asks_stateful_reconnect(request: HttpRequest) -> bool:
    """Whether the client asked for stateful reconnect (``useStatefulReconnect=true``, any case)."""
    for key in request.GET:
        if key.lower() == "usestatefulreconnect":
            return request.GET.get(key, "").lower() == "true"
    return False


def negotiate_view(hub: type[Hub]) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    """Return the async view answering SignalR's negotiate for ``hub``.

    Version 1 (``?negotiateVersion=1``, the official clients) gets a public ``connectionId`` and
    a secret ``connectionToken``; version 0 (no parameter: pysignalr, signalrcore) gets only a
    ``connectionId``, which is also its token. The token is bound to the user who negotiated.
    The view is CSRF-exempt because the official clients send no CSRF token: a cross-site page
    can make the POST but cannot read the answer, and the WebSocket itself checks the Origin.
    """
    hub_key = hub.hub_key()
    limiters: dict[float, KeyedRateLimiter] = {}  # by rate: a settings change starts afresh

    def too_often(request: HttpRequest) -> bool:
        rate = get_hub_settings().max_negotiations_per_second_per_address
        if rate is None:
            return False
        limiter = limiters.get(rate)
        if limiter is None:
            limiters.clear()
            limiter = limiters[rate] = KeyedRateLimiter(rate)
        return not limiter.allow(address_key(str(request.META.get("REMOTE_ADDR") or "")))

    async def negotiate(request: HttpRequest) -> HttpResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and listed_origin(origin) is not None:
            # A cross-origin page's preflight (the client's custom headers and credentials need one).
            return HttpResponse(status=204, headers=dict(cors_headers(origin, preflight=True)))
        response = await limited(request)
        for name, value in cors_headers(origin):
            response[name] = value
        return response

    async def limited(request: HttpRequest) -> HttpResponse:
        if shutdown.draining():
            return HttpResponse(
                "The server is shutting down; retry.",
                status=503,
                content_type="text/plain",
                headers={"Retry-After": "1"},
            )
        if too_often(request):
            return HttpResponse(
                "Too many negotiate requests from your address; retry later.",
                status=429,
                content_type="text/plain",
                headers={"Retry-After": "1"},
            )
        try:
            return await answer(request)
        except DatabaseError:
            # A locked or unreachable database: a clear, retryable answer rather than a 500.
            logger.warning(
                "signalr_groups: negotiate for %s failed: the database is unavailable", hub_key, exc_info=True
            )
            return HttpResponse(
                "The server's database is unavailable; retry.",
                status=503,
                content_type="text/plain",
                headers={"Retry-After": "1"},
            )

    async def answer(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(
                "Only POST is allowed on negotiate.", status=405, content_type="text/plain", headers={"Allow": "POST"}
            )
        version = _requested_version(request)
        if isinstance(version, str):
            return JsonResponse({"error": version})
        if version < max(0, get_hub_settings().min_negotiate_version):
            return JsonResponse(
                {"error": f"The client requested version '{version}', but the server does not support this version."}
            )
        version = min(version, MAX_NEGOTIATE_VERSION)
        token = bearer_from_header(request.headers.get("Authorization"))
        user: Any
        if token is not None:
            user = await user_from_token(token)
            if user is None:
                return HttpResponse("Invalid or expired access token.", status=401, content_type="text/plain")
        else:
            user = await session_user(request)
        permissions = hub.hub_permissions()
        if permissions and not await database_sync_to_async(check_permissions)(permissions, user, hub, None):
            if not getattr(user, "is_authenticated", False):
                return HttpResponse("Unauthorized", status=401, content_type="text/plain")
            return HttpResponse("Forbidden", status=403, content_type="text/plain")
        # As ASP.NET Core: only when the hub allows it and the client asked (the JS client fails a
        # start that reports it unasked), and only on negotiateVersion 1, which has a secret token.
        stateful = (
            version >= 1
            and _asks_stateful_reconnect(request)
            and get_hub_settings().stateful_reconnects_for(hub_key)
            and "WebSockets" in get_hub_settings().transports_for(hub_key)
        )
        connection_id, token = issue(hub_key, user, version, stateful=stateful)
        body: dict[str, Any] = {
            "connectionId": connection_id,
            "negotiateVersion": version,
            "availableTransports": available_transports(hub_key),
        }
        if version >= 1:
            body["connectionToken"] = token
            body["useStatefulReconnect"] = stateful
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response

    negotiate.__name__ = negotiate.__qualname__ = f"negotiate_{hub.__name__}"
    negotiate.signalr_hub = hub  # type: ignore[attr-defined]  # read by routed_hubs()
    # What @csrf_exempt sets: before Django 5.0 the decorator turns an async view into a sync one.
    negotiate.csrf_exempt = True  # type: ignore[attr-defined]
    return negotiate


@csrf_exempt
def access_token_view(request: HttpRequest) -> HttpResponse:
    """Issue a bearer access token: ``POST`` with ``username`` and ``password`` (JSON or form), or
    as an already logged-in session user.

    Answers ``{"access_token": …, "token_type": "Bearer", "expires_in": seconds}``, 401 for bad
    credentials. CSRF-exempt: it never acts on a victim's cookies in a way a cross-site page could
    read (the answer is not readable cross-origin). Put a rate limit in front of it, as for any login.
    """
    if request.method != "POST":
        return HttpResponse("Only POST is allowed.", status=405, content_type="text/plain", headers={"Allow": "POST"})
    credentials: dict[str, Any] = {}
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return JsonResponse({"error": "The body is not valid JSON."}, status=400)
        if isinstance(body, dict):
            credentials = body
    else:
        credentials = request.POST.dict()
    username, password = credentials.get("username"), credentials.get("password")
    user: Any
    if username is not None or password is not None:
        if not isinstance(username, str) or not isinstance(password, str):
            return JsonResponse({"error": "username and password must be strings."}, status=400)
        user = authenticate(request, username=username, password=password)
        if user is None:
            return JsonResponse({"error": "Invalid credentials."}, status=401)
    elif request.user.is_authenticated:
        user = request.user
    else:
        return JsonResponse({"error": "Log in, or send username and password."}, status=401)
    response = JsonResponse(
        {
            "access_token": issue_access_token(user),
            "token_type": "Bearer",
            "expires_in": int(get_hub_settings().access_token_lifetime),
        }
    )
    response["Cache-Control"] = "no-store"
    return response
