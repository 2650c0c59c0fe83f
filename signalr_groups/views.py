"""The negotiate endpoint: ``POST <hub>/negotiate``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from signalr_groups.hub import Hub
from signalr_groups.tokens import issue

#: Highest negotiate version this server speaks.
MAX_NEGOTIATE_VERSION = 1


def _requested_version(request: HttpRequest) -> int | str:
    for key in request.GET:
        value = request.GET.get(key, "")
        if key.lower() == "negotiateversion":
            try:
                return int(value)
            except ValueError:
                return "The client requested a non-integer protocol version."
    return 0


def negotiate_view(hub: type[Hub]) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    """Return the async view answering SignalR's negotiate for ``hub``.

    Version 1 (``?negotiateVersion=1``, the official clients) gets a public ``connectionId`` and
    a secret ``connectionToken``; version 0 (no parameter: pysignalr, signalrcore) gets only a
    ``connectionId``, which is also its token. The token is bound to the user who negotiated.
    The view is CSRF-exempt because the official clients send no CSRF token: a cross-site page
    can make the POST but cannot read the answer, and the WebSocket itself checks the Origin.
    """
    hub_key = hub.hub_key()

    @csrf_exempt
    async def negotiate(request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return HttpResponse(
                "Only POST is allowed on negotiate.", status=405, content_type="text/plain", headers={"Allow": "POST"}
            )
        version = _requested_version(request)
        if isinstance(version, str):
            return JsonResponse({"error": version})
        if version < 0:
            return JsonResponse(
                {"error": f"The client requested version '{version}', but the server does not support this version."}
            )
        version = min(version, MAX_NEGOTIATE_VERSION)
        user: Any = await request.auser() if hasattr(request, "auser") else None
        connection_id, token = issue(hub_key, user, version)
        body: dict[str, Any] = {
            "connectionId": connection_id,
            "negotiateVersion": version,
            "availableTransports": [{"transport": "WebSockets", "transferFormats": ["Text"]}],
        }
        if version >= 1:
            body["connectionToken"] = token
            body["useStatefulReconnect"] = False
        response = JsonResponse(body)
        response["Cache-Control"] = "no-store"
        return response

    negotiate.__name__ = negotiate.__qualname__ = f"negotiate_{hub.__name__}"
    return negotiate
