"""A request that ``HubHttpRouter`` hands to Django, cancelled mid-view as a stopping server does.

Daphne cancels the requests still in flight when it stops ("Killed N pending application
instances"). Django's ``ASGIHandler`` then leaves a task waiting for ``http.disconnect`` that
raises ``RequestAborted`` once it arrives, and asyncio logs "Task exception was never retrieved"
with a traceback. Through the router that task is cancelled with the request: nothing is logged.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import suppress
from typing import Any

import django
import pytest
from django.core.asgi import get_asgi_application

from signalr_groups.routing import HubHttpRouter
from tests import views

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/test/slow",
    "raw_path": b"/test/slow",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def _cancel_mid_view(app: Any) -> list[dict[str, Any]]:
    """Run ``app`` on the slow view, cancel it mid-view, then deliver the disconnect; what asyncio logged."""
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    try:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        started = len(views.slow_view_calls)
        request = asyncio.create_task(app(dict(SCOPE), inbox.get, send))
        for _ in range(1000):  # bounded: 10 s
            if len(views.slow_view_calls) > started:
                break
            await asyncio.sleep(0.01)
        assert len(views.slow_view_calls) > started, "the slow view never started"
        request.cancel()  # what daphne does to the requests in flight when it stops
        with suppress(asyncio.CancelledError):
            await request
        inbox.put_nowait({"type": "http.disconnect"})  # the connection closes
        for _ in range(5):
            await asyncio.sleep(0.01)
        del request
        gc.collect()  # "never retrieved" is reported when the task is collected
        await asyncio.sleep(0)
        assert sent == []  # cancelled before any response
        return logged
    finally:
        loop.set_exception_handler(previous)


@pytest.mark.django_db(transaction=True)
async def test_a_cancelled_request_to_django_logs_no_task_error_through_the_router():
    logged = await _cancel_mid_view(HubHttpRouter([], get_asgi_application()))
    assert logged == []


@pytest.mark.django_db(transaction=True)
async def test_django_alone_logs_the_task_error_that_the_router_prevents():
    """The control: Django's handler called directly leaves the failed task behind.

    Since Django 5.0, whose handler listens for the disconnect in a task of its own; Django 4.2 has no such
    task and leaves nothing behind.
    """
    logged = await _cancel_mid_view(get_asgi_application())
    expected = ["Task exception was never retrieved"] if django.VERSION >= (5, 0) else []
    assert [str(context.get("message")) for context in logged] == expected
