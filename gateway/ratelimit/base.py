"""What a rate limiter is asked and what it answers: `Limit`, `Decision` and the `Limiter` protocol.

Both implementations (`memory.MemoryLimiter`, `redis.RedisLimiter`) share the arithmetic of
`gcra.py` and therefore give identical answers for identical histories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.ratelimit.gcra import Outcome, scale

# Lua numbers are IEEE doubles: every integer the script handles must stay below 2**53 to be exact.
# A limit's capacity (limit x window ticks, see gcra.py) may use half of that range; overshoot the rest.
MAX_CAPACITY = 2**52


@dataclass(frozen=True)
class Limit:
    """One budget a request counts against, e.g. the account's requests per minute."""

    name: str  # "rpm" | "rpd" | "tpd" | "key_rpm": used in messages and metrics
    key: str  # "acct:<account_id>:rpm", "key:<key_id>:rpm": ids only, never a secret
    limit: int  # units allowed per window
    window: float  # seconds
    cost: int = 1  # units this request takes at admission (0: only check that the budget is not spent)

    def __post_init__(self) -> None:
        if not self.name or not self.key or any(char.isspace() for char in self.key):
            raise ValueError(f"rate limit needs a name and a key without spaces (got {self.name!r}, {self.key!r})")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"rate limit {self.name}: limit must be an integer >= 1 (got {self.limit!r})")
        if not self.window >= 0.001:
            raise ValueError(f"rate limit {self.name}: window must be at least 1 ms (got {self.window!r})")
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or not 0 <= self.cost <= self.limit:
            raise ValueError(f"rate limit {self.name}: cost must be an integer in 0..limit (got {self.cost!r})")
        if scale(self).capacity > MAX_CAPACITY:
            raise ValueError(f"rate limit {self.name}: limit {self.limit} is too large to count exactly")


@dataclass(frozen=True)
class Decision:
    """The answer to one `hit`; `limit`, `remaining` and `reset_seconds` describe the headline (first) limit."""

    allowed: bool
    limit: int
    remaining: int  # whole units of the headline limit left after this request
    reset_seconds: float  # until the headline limit is back to full (all its units free)
    retry_after: float  # until the refused request could pass (0 when allowed)
    refused_by: str | None  # name of the limit that refused (the one with the longest wait)
    degraded: bool = False  # the backend failed and we failed open


class Limiter(Protocol):
    """Counts requests and tokens against limits; one instance serves the whole process."""

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        """Admit the request against every limit or refuse it; a refusal consumes nothing anywhere."""
        ...

    def hit_soon(self, limits: Sequence[Limit]) -> asyncio.Future[Decision]:
        """`hit`, started now: whatever must reach a server is written before this returns, so the round
        trip overlaps the caller's work until it awaits the future (or cancels it)."""
        ...

    async def consume(self, limit: Limit, units: int) -> None:
        """Count units used after the fact (tokens of a finished answer); never refuses."""
        ...

    async def aclose(self) -> None: ...


def check_limits(limits: Sequence[Limit]) -> None:
    """Refuse an empty list (no headline) or a key listed twice (it would be counted once, checked twice)."""
    if not limits:
        raise ValueError("hit() needs at least one limit: the first one is the headline")
    keys = [limit.key for limit in limits]
    if len(set(keys)) != len(keys):
        raise ValueError(f"hit() got the same key twice: {keys}")


def check_units(units: int) -> None:
    if isinstance(units, bool) or not isinstance(units, int) or units < 0:
        raise ValueError(f"consume() needs a whole number of units >= 0 (got {units!r})")


def fail_open(headline: Limit) -> Decision:
    """What a limiter answers when its backend is down: allowed, flagged, with the headline's nominal numbers."""
    return Decision(allowed=True, limit=headline.limit, remaining=headline.limit, reset_seconds=0.0,
                    retry_after=0.0, refused_by=None, degraded=True)



def to_decision(limits: Sequence[Limit], outcome: Outcome) -> Decision:
    """The Decision for an evaluation of `limits` (by either backend)."""
    return Decision(allowed=outcome.allowed, limit=limits[0].limit, remaining=outcome.remaining,
                    reset_seconds=outcome.reset_ms / 1000, retry_after=outcome.retry_ms / 1000,
                    refused_by=None if outcome.allowed else limits[outcome.refused].name)
