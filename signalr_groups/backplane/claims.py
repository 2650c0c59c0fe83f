"""Single use of a connection token across every server process that shares a Redis."""

from __future__ import annotations

import hashlib
import logging

from signalr_groups.auth.connection_tokens import CLAIM_MARGIN, claim, unclaim
from signalr_groups.backplane.layer import redis_client, shared_redis_url
from signalr_groups.exceptions import SignalRGroupsError

logger = logging.getLogger(__name__)


class ClaimUnavailableError(SignalRGroupsError):
    """The shared Redis that records single use cannot be reached: the token is not accepted (fail closed)."""


async def claim_everywhere(token: str, max_age: float) -> bool:
    """:func:`~signalr_groups.auth.connection_tokens.claim` across every process sharing a Redis.

    With several processes a client may negotiate with one and open its WebSocket on another
    (no sticky sessions needed), so "used once" must hold cluster-wide: a ``SET NX`` on a
    digest of the token, expiring with it. If that Redis cannot be reached the claim fails
    closed: :class:`ClaimUnavailableError`, and the token stays unused so the client may retry
    with it once Redis is back.
    """
    if not claim(token, max_age):
        return False
    url = shared_redis_url()
    if url is None:
        return True
    key = "sgr.claim." + hashlib.sha256(token.encode()).hexdigest()[:40]
    from redis.exceptions import ConnectionError as RedisConnectionError  # redis comes with channels-redis

    client = redis_client(url)
    try:
        try:
            return bool(await client.set(key, b"1", nx=True, ex=int(max_age) + CLAIM_MARGIN))
        except RedisConnectionError:
            # A connection the pool kept from before a Redis restart fails once: try a fresh one.
            # (Not after a timeout: the first SET may have been applied, and a retry would refuse.)
            return bool(await client.set(key, b"1", nx=True, ex=int(max_age) + CLAIM_MARGIN))
    except Exception as exc:
        unclaim(token)
        logger.warning("signalr_groups: could not record the connection token's use in Redis: %r", exc)
        raise ClaimUnavailableError("The server cannot check the connection token now; retry.") from exc
