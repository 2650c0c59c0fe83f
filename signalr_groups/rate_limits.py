"""Token buckets: the invocation rate of a connection, and the negotiate rate of a client address."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from typing import Final

#: Client addresses a keyed limiter remembers at most (the least recently seen are forgotten).
MAX_KEYS: Final = 10_000


def plain_address(address: str) -> str:
    """An IP address in its canonical text (an IPv4-mapped IPv6 address as IPv4); anything else unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def address_key(address: str) -> str:
    """The key a per-address limit counts by: the address, or for IPv6 its /64 (one host can hold a whole /64)."""
    plain = plain_address(address)
    if ":" in plain:
        try:
            return str(ipaddress.ip_network(f"{plain}/64", strict=False))
        except ValueError:
            return plain
    return plain


class TokenBucket:
    """``rate`` events a second on average, bursts of up to ``rate`` at once."""

    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token; False (nothing spent) when the bucket is empty."""
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class KeyedRateLimiter:
    """One :class:`TokenBucket` per key (a client address), for at most :data:`MAX_KEYS` keys."""

    def __init__(self, rate: float, max_keys: int = MAX_KEYS) -> None:
        self.rate = rate
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Whether one more event for ``key`` is within the rate."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take()
