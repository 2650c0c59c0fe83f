"""Who is connecting: a bearer access token if the client sent one, else the Django session user.

The official clients send ``accessTokenFactory``'s token as ``Authorization: Bearer`` on
negotiate (and, in Node and .NET, on the WebSocket upgrade), and as the ``access_token`` query
parameter on the browser WebSocket, which cannot carry headers. A token that is present but
invalid is refused (401), never silently downgraded to the session or to anonymous.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user, get_user_model
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

from signalr_groups.auth.access_tokens import user_for_access_token

_BEARER = "bearer "


def bearer_from_header(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if value and value[: len(_BEARER)].lower() == _BEARER:
        token = value[len(_BEARER) :].strip()
        return token or None
    return None


def bearer_from_scope(scope: dict[str, Any]) -> str | None:
    """The access token of a WebSocket request: the Authorization header, else ``access_token``."""
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            token = bearer_from_header(bytes(value).decode("latin-1"))
            if token is not None:
                return token
    raw = scope.get("query_string", b"")
    try:
        values = parse_qs(bytes(raw).decode("latin-1")).get("access_token")
    except ValueError:
        return None
    return values[0] if values else None


async def session_user(request: HttpRequest) -> Any | None:
    """The user ``AuthenticationMiddleware`` gives ``request`` (``AnonymousUser`` if none); None without it.

    ``request.auser()`` where Django has it (5.0 and later); on Django 4.2, which has only the lazy
    ``request.user``, the session is read in a worker thread, as ``auser()`` does.
    """
    if hasattr(request, "auser"):
        return await request.auser()
    if hasattr(request, "user"):
        return await database_sync_to_async(get_user)(request)
    return None


async def user_from_token(token: str) -> Any | None:
    """The user of a bearer token (database lookup in a worker thread), or None if invalid."""
    return await database_sync_to_async(user_for_access_token)(token)


def token_still_valid(token: str, user_pk: Any) -> bool:
    """Whether a bearer token still authenticates the same user (reads the DB: call in a thread)."""
    user = user_for_access_token(token)
    return user is not None and str(user.pk) == str(user_pk)


def session_still_valid(session_key: str | None, user_pk: Any) -> bool:
    """Whether a session still authenticates the same, active user with an unchanged password.

    Mirrors ``django.contrib.auth.get_user``; reads the session store and the DB (call in a thread).
    """
    if not session_key:
        return False
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_pk):
        return False
    user = get_user_model()._default_manager.filter(pk=user_pk).first()
    if user is None or not getattr(user, "is_active", True):
        return False
    return constant_time_compare(str(data.get(HASH_SESSION_KEY, "")), user.get_session_auth_hash())
