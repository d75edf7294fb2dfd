"""Counting attempts per key (an account, an address, an email) in fixed windows, and refusing beyond a limit.

Used where guessing or flooding must be slowed: redemption codes (failures per account and
address) and password-reset mails (requests per email and address). With Redis the counters are
shared by every replica, like the login throttle's (gateway/auth/throttle.py, whose counters
this reuses); without it they live in this process.
"""

from __future__ import annotations

import hashlib
import math

from redis.asyncio import Redis

from gateway.auth.throttle import Counters, MemoryCounters, RedisCounters
from gateway.errors import GatewayError

Limits = list[tuple[str, int]]  # (key, attempts allowed per window)


class AttemptThrottle:
    """Counted attempts per key in windows of `window` seconds; `what` names them in the 429 message."""

    def __init__(self, counters: Counters, *, window: float, what: str) -> None:
        self._counters = counters
        self.window = window
        self.what = what

    @classmethod
    def create(cls, redis: Redis | None, *, namespace: str, window: float, what: str) -> AttemptThrottle:
        counters: Counters = RedisCounters(redis, namespace=namespace) if redis is not None else MemoryCounters()
        return cls(counters, window=window, what=what)

    async def check(self, limits: Limits) -> None:
        """429 `rate_limit_exceeded` with Retry-After while any key has used up its attempts."""
        wait = 0.0
        for key, limit in limits:
            attempts, remaining = await self._counters.count(key)
            if attempts >= limit:
                wait = max(wait, remaining)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise GatewayError(429, "rate_limit_exceeded", f"Too many {self.what}; try again in {seconds} seconds.",
                               type="rate_limit_error", headers={"Retry-After": str(seconds)})

    async def count(self, limits: Limits) -> None:
        for key, _limit in limits:
            await self._counters.add(key, self.window)


REDEEM_FAILURES_PER_HOUR = 10
RESETS_PER_EMAIL_PER_HOUR = 5
RESETS_PER_ADDRESS_PER_HOUR = 30


def redeem_throttle(redis: Redis | None) -> AttemptThrottle:
    return AttemptThrottle.create(redis, namespace="pr:redeem:", window=3600.0, what="invalid codes")


def redeem_limits(account_id: str, ip: str | None) -> Limits:
    """Failed redemptions per account and per client address."""
    limits = [(f"account:{account_id}", REDEEM_FAILURES_PER_HOUR)]
    return limits + ([(f"ip:{ip}", REDEEM_FAILURES_PER_HOUR)] if ip else [])


def reset_throttle(redis: Redis | None) -> AttemptThrottle:
    return AttemptThrottle.create(redis, namespace="pr:reset:", window=3600.0, what="password reset requests")


def reset_limits(email: str, ip: str | None) -> Limits:
    """Reset requests per email, counted whether or not it has an account (so the limit reveals nothing;
    hashed, so Redis does not list who is targeted), and per client address."""
    limits = [("email:" + hashlib.sha256(email.encode()).hexdigest()[:32], RESETS_PER_EMAIL_PER_HOUR)]
    return limits + ([(f"ip:{ip}", RESETS_PER_ADDRESS_PER_HOUR)] if ip else [])
