"""Failed-login throttling per client IP and per email: fixed windows of counted failures.

After `email_limit` failures for one email (or `ip_limit` from one address) within `window`
seconds, further attempts are refused with 429 and `Retry-After` until the window ends, without
checking the password. A successful login clears the email's counter (not the address's).
With Redis the counters are shared by every replica; without it they live in this process.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from gateway.errors import GatewayError

DEFAULT_WINDOW = 900.0
DEFAULT_EMAIL_LIMIT = 5
DEFAULT_IP_LIMIT = 30


class Counters(Protocol):
    async def count(self, key: str) -> tuple[int, float]:
        """Failures so far in the key's window and seconds until it ends."""
        ...

    async def add(self, key: str, window: float) -> None: ...

    async def clear(self, key: str) -> None: ...


class MemoryCounters:
    """Per-process fixed windows, bounded: the oldest windows are dropped first."""

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._windows: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    async def count(self, key: str) -> tuple[int, float]:
        entry = self._windows.get(key)
        if entry is None:
            return 0, 0.0
        failures, ends = entry
        remaining = ends - self._clock()
        if remaining <= 0:
            del self._windows[key]
            return 0, 0.0
        return failures, remaining

    async def add(self, key: str, window: float) -> None:
        failures, remaining = await self.count(key)
        ends = self._clock() + (remaining if failures else window)
        self._windows[key] = (failures + 1, ends)
        self._windows.move_to_end(key)
        while len(self._windows) > self._max_entries:
            self._windows.popitem(last=False)

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)


class RedisCounters:
    """Windows shared by all replicas: SET NX EX starts a window, INCR counts in it (one MULTI)."""

    def __init__(self, redis: Redis, *, namespace: str = "pr:login:") -> None:
        self._redis = redis
        self._namespace = namespace

    async def count(self, key: str) -> tuple[int, float]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self._namespace + key)
            pipe.pttl(self._namespace + key)
            raw, pttl = await pipe.execute()
        if raw is None or pttl is None or int(pttl) <= 0:
            return 0, 0.0
        return int(raw), int(pttl) / 1000

    async def add(self, key: str, window: float) -> None:
        name = self._namespace + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(name, 0, px=max(1, int(window * 1000)), nx=True)
            pipe.incr(name)
            await pipe.execute()

    async def clear(self, key: str) -> None:
        await self._redis.delete(self._namespace + key)


class LoginThrottle:
    """Refuses logins from an address or for an email with too many recent failures."""

    def __init__(self, counters: Counters, *, window: float = DEFAULT_WINDOW, email_limit: int = DEFAULT_EMAIL_LIMIT,
                 ip_limit: int = DEFAULT_IP_LIMIT) -> None:
        self._counters = counters
        self.window = window
        self.email_limit = email_limit
        self.ip_limit = ip_limit

    @classmethod
    def create(cls, redis: Redis | None, *, window: float = DEFAULT_WINDOW, email_limit: int = DEFAULT_EMAIL_LIMIT,
               ip_limit: int = DEFAULT_IP_LIMIT) -> LoginThrottle:
        """Redis-backed when `redis` is given, else in-process."""
        counters: Counters = RedisCounters(redis) if redis is not None else MemoryCounters()
        return cls(counters, window=window, email_limit=email_limit, ip_limit=ip_limit)

    async def check(self, *, ip: str | None, email: str) -> None:
        """Raise 429 `rate_limit_exceeded` with Retry-After when the address or the email is locked out."""
        wait = 0.0
        for key, limit in self._keys(ip, email):
            failures, remaining = await self._counters.count(key)
            if failures >= limit:
                wait = max(wait, remaining)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise GatewayError(429, "rate_limit_exceeded",
                               f"Too many failed logins; try again in {seconds} seconds.",
                               type="rate_limit_error", headers={"Retry-After": str(seconds)})

    async def failed(self, *, ip: str | None, email: str) -> None:
        """Count one failed attempt against the address and the email."""
        for key, _limit in self._keys(ip, email):
            await self._counters.add(key, self.window)

    async def succeeded(self, *, email: str) -> None:
        await self._counters.clear(_email_key(email))

    def _keys(self, ip: str | None, email: str) -> list[tuple[str, int]]:
        keys = [(_email_key(email), self.email_limit)]
        if ip:
            keys.append((f"ip:{ip}", self.ip_limit))
        return keys


def _email_key(email: str) -> str:
    # Hashed so neither Redis nor a memory dump lists who is being attacked.
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
