"""Counting attempts per key (an account, an address, an email) in fixed windows, and refusing beyond a limit.

Used where guessing or flooding must be slowed: redemption codes (failures per account and
address) and password-reset mails (requests per email and address). With Redis the counters are
shared by every replica, like the login throttle's (gateway/auth/throttle.py, whose stores
this reuses); without it they live in this process.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from gateway.auth.throttle import AttemptStore, FallbackStore, MemoryStore, Policy, RedisStore, too_many

Limits = list[tuple[str, int]]  # (key, attempts allowed per window)


class AttemptThrottle:
    """At most `limit` attempts per key within `window` seconds; `what` names them in the 429 message.

    Built on the login throttle's stores, so an attempt is counted atomically *before* the caller
    acts (N concurrent guesses are N counted attempts) and, with Redis, shared by every replica.
    """

    def __init__(self, store: AttemptStore, *, window: float, what: str) -> None:
        self._store = store
        self.window = window
        self.what = what

    @classmethod
    def create(cls, redis: Redis | None, *, namespace: str, window: float, what: str) -> AttemptThrottle:
        store: AttemptStore = (FallbackStore(RedisStore(redis, namespace=namespace)) if redis is not None
                               else MemoryStore())
        return cls(store, window=window, what=what)

    async def reserve(self, limits: Limits) -> None:
        """Count one attempt on every key, or raise 429 `rate_limit_exceeded` (Retry-After) and count
        nothing while a key has used up its attempts in the window."""
        # A hard wall for the rest of the window: `limit` free attempts, then wait `window` seconds.
        keys = [(key, Policy(free=limit, base=self.window, cap=self.window)) for key, limit in limits]
        wait = await self._store.reserve(keys, self.window)
        if wait > 0:
            raise too_many(wait, f"Too many {self.what}; try again in {{seconds}} seconds.")

    async def undo(self, limits: Limits) -> None:
        """Take back the attempt `reserve` counted (it succeeded, so it must not count as a guess)."""
        for key, _limit in limits:
            await self._store.undo(key)


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
