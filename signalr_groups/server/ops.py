"""Views for operators: Prometheus metrics, and health endpoints for load balancers.

- :func:`metrics_view`: the Prometheus text format of prometheus-client's default registry, this
  process's metrics (scrape every process; see :mod:`signalr_groups.metrics`). Answered to staff
  users and to the addresses of ``METRICS_ALLOWED_ADDRESSES``; 403 otherwise.
- :func:`readiness_view`: 200 when this process can serve: its database answers, a message
  sent through the channel layer comes back, and every running hub's layer subscription is alive;
  503 otherwise, with a JSON body saying which check failed. 503 too while the process drains
  for a shutdown (see :mod:`.shutdown`).
- :func:`liveness_view`: 200 while the event loop answers.

Mount them with :func:`signalr_groups.routing.metrics_path` and
:func:`signalr_groups.routing.health_paths`, or include ``signalr_groups.urls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from channels.db import database_sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from signalr_groups.auth.identity import session_user
from signalr_groups.backplane.layer import get_layer, release_channel
from signalr_groups.conf import get_hub_settings
from signalr_groups.lifetime.managers import running_managers
from signalr_groups.rate_limits import plain_address
from signalr_groups.server.shutdown import draining

#: Seconds each readiness check may take.
CHECK_TIMEOUT: Final = 2.0


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics, in Prometheus' text format (staff, or an allowed address; else 403)."""
    if plain_address(str(request.META.get("REMOTE_ADDR") or "")) not in get_hub_settings().metrics_allowed_addresses:
        user = await session_user(request)
        if not getattr(user, "is_staff", False):
            return HttpResponse("Metrics are for staff and METRICS_ALLOWED_ADDRESSES.", status=403)
    body = generate_latest(REGISTRY)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check_database() -> str | None:
    try:
        await asyncio.wait_for(database_sync_to_async(_database_answers)(), CHECK_TIMEOUT)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def _check_layer() -> str | None:
    layer = get_layer()
    if layer is None:
        return None  # no channel layer: a single process, nothing to reach
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            channel = await layer.new_channel()
            try:
                token = f"ready-{time.monotonic_ns()}"
                await layer.send(channel, {"type": "signalr.ready", "token": token})
                message = await layer.receive(channel)
                if message.get("token") != token:
                    return "the channel layer returned another message"
            finally:
                with contextlib.suppress(Exception):
                    await release_channel(layer, channel)
    except TimeoutError:
        return f"a message through the channel layer did not come back within {CHECK_TIMEOUT:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_subscriptions() -> str | None:
    failing = [
        manager.hub_key
        for manager in running_managers()
        if manager.membership is not None and not manager.membership.healthy
    ]
    if failing:
        return f"the layer subscription of hub(s) {', '.join(sorted(failing))} is recovering"
    return None


async def readiness_view(request: HttpRequest) -> HttpResponse:
    """200 ``{"status": "ready", "checks": {...}}`` or 503 with the failed checks' reasons."""
    if draining():
        # At once: a load balancer should stop sending here now, not after the other checks.
        checks: dict[str, str | None] = {"draining": "this process is shutting down"}
    else:
        database, layer = await asyncio.gather(_check_database(), _check_layer())
        checks = {
            "database": database,
            "channel_layer": layer,
            "layer_subscriptions": _check_subscriptions(),
            "draining": None,
        }
    failed = {name: reason for name, reason in checks.items() if reason is not None}
    body = {
        "status": "unavailable" if failed else "ready",
        "checks": {name: reason or "ok" for name, reason in checks.items()},
    }
    response = JsonResponse(body, status=503 if failed else 200)
    response["Cache-Control"] = "no-store"
    return response


async def liveness_view(request: HttpRequest) -> HttpResponse:
    """200 ``{"status": "alive"}`` (the event loop answered)."""
    response = JsonResponse({"status": "alive"})
    response["Cache-Control"] = "no-store"
    return response
