"""Small pieces of the HTTP transports' requests: answers, the credentials a request presents, and waiting
while its client stays."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings as django_settings
from django.http import parse_cookie

from signalr_groups.auth.identity import bearer_from_scope

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
T = TypeVar("T")


async def respond(
    send: ASGISend,
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = b"text/plain",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A complete response."""
    all_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(headers or ())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def credential_fingerprint(scope: dict[str, Any]) -> str:
    """A digest of the credentials a request presents: its bearer token, else its session cookie, else none."""
    token = bearer_from_scope(scope)
    if token is not None:
        material = "bearer:" + token
    else:
        material = "session:" + (cookie(scope, django_settings.SESSION_COOKIE_NAME) or "")
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def cookie(scope: dict[str, Any], name: str) -> str | None:
    """The value of cookie ``name`` in the request's ``Cookie`` header, if any."""
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            try:
                cookies = parse_cookie(bytes(value).decode("latin-1"))
            except ValueError:
                return None
            if name in cookies:
                return cookies[name]
    return None


def wants_event_stream(scope: dict[str, Any]) -> bool:
    """Whether a GET asks for Server-Sent Events (``Accept: text/event-stream``)."""
    return any(key == b"accept" and b"text/event-stream" in bytes(value) for key, value in scope.get("headers", ()))


async def while_client_stays(receive: ASGIReceive, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Run ``work`` until it is done, or cancel it if the client goes away first: ``(done, result)``.

    (An exception from ``work`` propagates.)
    """
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(until_disconnect(receive))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False, None
    return True, task.result()


async def unless_client_leaves(receive: ASGIReceive, work: Awaitable[T]) -> T | None:
    """``work``'s result, or None if the client went away first (``work`` is then cancelled)."""
    return (await while_client_stays(receive, work))[1]


async def until_disconnect(receive: ASGIReceive) -> None:
    """Wait until the client has gone (reading, and dropping, any body it still sends)."""
    while (await receive())["type"] != "http.disconnect":
        pass
