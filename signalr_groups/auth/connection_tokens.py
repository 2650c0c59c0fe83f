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
from dataclasses import dataclass
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


def _signer(hub_key: str, user: Any, version: int | str) -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=f"{_SALT}:{version}:{hub_key}:{_binding(user)}", sep=".")


#: The signing "version" of a negotiateVersion 1 token whose client negotiated stateful reconnect.
_STATEFUL: Final = "1-stateful"


def new_connection_id() -> str:
    """A fresh public connection id: 16 random bytes, base64url (22 characters), as ASP.NET Core."""
    return secrets.token_urlsafe(16)


def issue(hub_key: str, user: Any, version: int, *, stateful: bool = False) -> tuple[str, str]:
    """Return ``(connection_id, token)`` for a negotiate response of ``version`` (0 or 1).

    ``stateful``: the client negotiated stateful reconnect (version 1 only); :func:`resolve_token` tells.
    """
    version = 1 if version >= 1 else 0
    connection_id = new_connection_id()
    token = _signer(hub_key, user, _STATEFUL if stateful and version == 1 else version).sign(connection_id)
    if version == 0:
        return token, token
    return connection_id, token


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    """What a valid connection token says: the connection's id, and whether its client negotiated stateful reconnect."""

    connection_id: str
    stateful: bool


def resolve_token(hub_key: str, user: Any, token: str, max_age: float | None) -> ResolvedToken | None:
    """What ``token`` says if it was issued to ``user`` for this hub (and, unless ``max_age`` is None, recently)."""
    age = None if max_age is None else timedelta(seconds=max_age)
    for version in (1, _STATEFUL, 0):
        try:
            connection_id = _signer(hub_key, user, version).unsign(token, max_age=age)
        except signing.BadSignature:
            continue
        return ResolvedToken(connection_id if version != 0 else token, version == _STATEFUL)
    return None


def resolve(hub_key: str, user: Any, token: str, max_age: float) -> str | None:
    """Return the connection id that ``token`` was issued for to ``user``, or None if invalid."""
    resolved = resolve_token(hub_key, user, token, max_age)
    return resolved.connection_id if resolved is not None else None


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
