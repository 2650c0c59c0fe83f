"""Connection tokens issued by negotiate: signed, short-lived, and bound to the negotiating user.

negotiateVersion 1 returns a public ``connectionId`` and a secret ``connectionToken`` (the
transport's ``id=``). Version 0 (pysignalr, signalrcore) has only ``connectionId``, which then
doubles as the token, so for those clients the id is the signed token itself. Tokens are signed
with ``SECRET_KEY`` rather than stored, so any process of the site can check them; a token is
accepted once (a second socket on a live token gets 409, a used one 404), on every process
that shares the Redis of the channel layer (:func:`signalr_groups.backplane.claims.claim_everywhere`).
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import timedelta
from typing import Any, Final

from django.core import signing

_SALT: Final = "signalr_groups.connection-token"
#: Seconds a claim outlives the token's age limit: a request that found the token fresh just before
#: it expired, and claims it a little later, must still find the first claim.
CLAIM_MARGIN: Final = 60
_used: dict[str, float] = {}
_used_lock = threading.Lock()


def _binding(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return "anonymous"
    auth_hash = user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    return f"{user.pk}:{auth_hash}"


def _signer(hub_key: str, user: Any, version: int) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"{_SALT}:{version}:{hub_key}:{_binding(user)}", sep=".")


def new_connection_id() -> str:
    """A fresh public connection id: 16 random bytes, base64url (22 characters), as ASP.NET Core."""
    return secrets.token_urlsafe(16)


def issue(hub_key: str, user: Any, version: int) -> tuple[str, str]:
    """Return ``(connection_id, token)`` for a negotiate response of ``version`` (0 or 1)."""
    version = 1 if version >= 1 else 0
    connection_id = new_connection_id()
    token = _signer(hub_key, user, version).sign(connection_id)
    if version == 0:
        return token, token
    return connection_id, token


def resolve(hub_key: str, user: Any, token: str, max_age: float) -> str | None:
    """Return the connection id that ``token`` was issued for to ``user``, or None if invalid."""
    for version in (1, 0):
        try:
            connection_id = _signer(hub_key, user, version).unsign(token, max_age=timedelta(seconds=max_age))
        except signing.BadSignature:
            continue
        return connection_id if version == 1 else token
    return None


def claim(token: str, max_age: float) -> bool:
    """Mark ``token`` as used; False if it was used before (replay)."""
    now = time.monotonic()
    with _used_lock:
        if len(_used) > 1024:
            for key in [key for key, expiry in _used.items() if expiry < now]:
                del _used[key]
        if token in _used and _used[token] >= now:
            return False
        _used[token] = now + max_age + CLAIM_MARGIN
        return True


def unclaim(token: str) -> None:
    """Undo :func:`claim` (the claim could not be made everywhere, so the client may try again)."""
    with _used_lock:
        _used.pop(token, None)
