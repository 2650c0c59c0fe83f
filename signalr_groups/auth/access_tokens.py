"""Bearer access tokens for native and mobile clients (``accessTokenFactory`` in the official clients).

A token is signed with ``SECRET_KEY``, carries the user's id and session-auth hash, and expires
after ``ACCESS_TOKEN_LIFETIME`` seconds. It stops working as soon as the user's password changes
(the hash no longer matches), the user is deactivated, or the user is deleted.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from django.contrib.auth import get_user_model
from django.core import signing
from django.utils.crypto import constant_time_compare

from signalr_groups.conf import get_hub_settings

_SALT: Final = "signalr_groups.access-token"


def issue_access_token(user: Any) -> str:
    """Return a signed access token for an active, authenticated ``user``."""
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
        raise ValueError("Access tokens are issued to active, authenticated users only.")
    return signing.TimestampSigner(salt=_SALT).sign_object({"u": str(user.pk), "h": user.get_session_auth_hash()})


def user_for_access_token(token: str) -> Any | None:
    """The user a token stands for, or ``None`` if it is forged, expired or no longer valid.

    Reads the database (call it from a worker thread, e.g. through ``database_sync_to_async``).
    """
    max_age = timedelta(seconds=get_hub_settings().access_token_lifetime)
    try:
        payload = signing.TimestampSigner(salt=_SALT).unsign_object(token, max_age=max_age)
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), str) or not isinstance(payload.get("h"), str):
        return None
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get(pk=user_model._meta.pk.to_python(payload["u"]))
    except (user_model.DoesNotExist, ValueError, Exception):
        return None
    if not getattr(user, "is_active", True):
        return None
    if not constant_time_compare(payload["h"], user.get_session_auth_hash()):
        return None
    return user


def access_token_expiry(token: str) -> float | None:
    """When a token expires (Unix time), read from its signed timestamp; None if unreadable.

    Only meaningful for a token that :func:`user_for_access_token` accepted.
    """
    try:
        _value, timestamp, _signature = token.rsplit(":", 2)
        return float(signing.b62_decode(timestamp)) + get_hub_settings().access_token_lifetime
    except (ValueError, TypeError):
        return None
