"""Single use of a connection token across every server process that shares a Redis."""

from __future__ import annotations

import hashlib
import logging

from signalr_groups.auth.connection_tokens import claim
from signalr_groups.backplane.layer import redis_client, shared_redis_url

logger = logging.getLogger(__name__)


async def claim_everywhere(token: str, max_age: float) -> bool:
    """:func:`~signalr_groups.auth.connection_tokens.claim` across every process sharing a Redis.

    With several processes a client may negotiate with one and open its WebSocket on another
    (no sticky sessions needed), so "used once" must hold cluster-wide: a ``SET NX`` on a
    digest of the token, expiring with it. If that Redis cannot be reached, the per-process
    claim still holds (and the connection will fail to register anyway).
    """
    if not claim(token, max_age):
        return False
    url = shared_redis_url()
    if url is None:
        return True
    key = "sgr.claim." + hashlib.sha256(token.encode()).hexdigest()[:40]
    try:
        return bool(await redis_client(url).set(key, b"1", nx=True, ex=int(max_age) + 2))
    except Exception as exc:
        logger.warning("signalr_groups: could not record the connection token's use in Redis: %r", exc)
        return True
