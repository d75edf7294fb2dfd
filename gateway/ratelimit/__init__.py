"""Rate limits per account and per key: GCRA (see gcra.py), in Redis for many replicas or in process.

`Limiter.hit(limits)` admits a request against all its limits or refuses it without consuming any;
`Limiter.consume(limit, units)` counts tokens once an answer is known (TPD). Both backends compute the
same integers; Redis does it in one Lua script on the server's clock and fails open when unreachable.
"""

from __future__ import annotations

from gateway.ratelimit.base import Decision, Limit, Limiter
from gateway.ratelimit.headers import rate_limit_headers
from gateway.ratelimit.memory import MemoryLimiter
from gateway.ratelimit.redis import RedisLimiter

__all__ = ["Decision", "Limit", "Limiter", "MemoryLimiter", "RedisLimiter", "rate_limit_headers"]
