"""The shared limiter: one Lua script (ratelimit.lua) per call, atomic across every replica.

The script goes over the worker's own pipelined connection (`channel.ScriptChannel`, replies parsed by
hiredis) when the client's URL allows it, else through the redis-py client.

Failure policy: rate limits fail OPEN. Any Redis error (refused, timeout, even a script error) admits
the request with `Decision(degraded=True)`, calls `on_error(exc)` (a metric) and logs a WARNING at
most once per 10 s, naming only the exception's class. After an error the limiter does not call Redis
again for `cooldown` seconds, then lets ONE call probe it while the others keep failing open, so an
outage that makes calls hang costs one slow request per cooldown, not a slow request each.
Money never depends on Redis (holds live in the database), so failing open risks load, not money.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.ratelimit import gcra
from gateway.ratelimit.base import Decision, Limit, check_limits, check_units, fail_open, to_decision
from gateway.ratelimit.channel import ScriptChannel

logger = logging.getLogger("gateway.ratelimit")

SCRIPT = resources.files("gateway.ratelimit").joinpath("ratelimit.lua").read_text(encoding="utf-8")
_version = re.search(r"script version: (\d+)", SCRIPT)
if _version is None:  # pragma: no cover - guards an edit of the script
    raise RuntimeError("ratelimit.lua lost its 'script version: N' line")
SCRIPT_VERSION = int(_version.group(1))
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

LOG_INTERVAL = 10.0
_ERRORS = (RedisError, OSError, TimeoutError)


def create_client(url: str, *, timeout: float = 0.5) -> Redis:
    """A Redis client suited to fail-open limits: short timeouts, a waiting pool, no retries."""
    # No retry: after a read timeout the script may have run, and running it again counts a request twice;
    # a failed call costs one fail-open decision. The blocking pool makes a burst of concurrent requests
    # queue briefly for a connection instead of failing (the default pool raises past 100 in use).
    # health_check_interval pings a connection idle for 30 s before reuse, so a Redis restart does not
    # turn each stale pooled connection into a failed call.
    pool = BlockingConnectionPool.from_url(url, max_connections=64, timeout=timeout, socket_connect_timeout=timeout,
                                           socket_timeout=timeout, retry=Retry(NoBackoff(), 0),
                                           health_check_interval=30)
    return Redis.from_pool(pool)


class RedisLimiter:
    """GCRA in Redis via EVALSHA (EVAL when the server forgot the script); fails open."""

    def __init__(self, redis: Redis, *, prefix: str = "pr:rl:", on_error: Callable[[Exception], None] | None = None,
                 timeout: float = 0.5, cooldown: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._channel = ScriptChannel.for_client(redis)
        self._prefix = f"{prefix}v{SCRIPT_VERSION}:"
        self._on_error = on_error
        self._timeout = timeout
        self._cooldown = cooldown
        self._clock = clock
        self._down_until = float("-inf")
        self._failing = False
        self._probing = False
        self._last_warning = float("-inf")
        self._suppressed = 0

    def redis_key(self, limit: Limit) -> str:
        """The Redis key holding a limit's state."""
        return self._prefix + limit.key

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        """Admit against every limit or refuse, atomically in Redis; a refusal consumes nothing."""
        check_limits(limits)
        return await self._hit(limits, None)

    def hit_soon(self, limits: Sequence[Limit]) -> asyncio.Future[Decision]:
        """`hit` as a task whose command is already written when this returns (when the limiter's connection
        is up and Redis healthy; else the task does all the work when it runs)."""
        check_limits(limits)
        early = None
        channel = self._channel
        if channel is not None and not self._failing:
            keys, args = self._command("hit", limits, [limit.cost for limit in limits])
            early = channel.send_now("EVALSHA", SCRIPT_SHA, len(keys), *keys, *args)
        task = asyncio.ensure_future(self._hit(limits, early))
        if early is not None:
            task.add_done_callback(lambda _: early.cancel())  # a task cancelled before it ran drops the reply
        return task

    async def _hit(self, limits: Sequence[Limit], early: asyncio.Future[Any] | None) -> Decision:
        reply = await self._run("hit", limits, [limit.cost for limit in limits], early)
        if reply is None:
            return fail_open(limits[0])
        allowed, refused, retry_ms, remaining, reset_ms = (int(value) for value in reply)
        outcome = gcra.Outcome(allowed=bool(allowed), refused=refused - 1, retry_ms=retry_ms, remaining=remaining,
                               reset_ms=reset_ms, levels=())
        return to_decision(limits, outcome)

    async def consume(self, limit: Limit, units: int) -> None:
        """Count units after the fact; never refuses, never raises for Redis errors."""
        check_units(units)
        if units:
            await self._run("consume", [limit], [units])

    async def aclose(self) -> None:
        """Close the limiter's own connection; the Redis client belongs to the caller, who closes it."""
        if self._channel is not None:
            await self._channel.aclose()

    def _command(self, mode: str, limits: Sequence[Limit], costs: Sequence[int]) -> tuple[list[str], list[str | int]]:
        keys = [self.redis_key(limit) for limit in limits]
        args: list[str | int] = [mode]
        for limit, cost in zip(limits, costs, strict=True):
            sc = gcra.scale(limit)
            args += [sc.tick_ms, sc.width, sc.rate, cost]
        return keys, args

    async def _run(self, mode: str, limits: Sequence[Limit], costs: Sequence[int],
                   early: asyncio.Future[Any] | None = None) -> list[int] | None:
        # `early`: the reply to this very command, already sent by `hit_soon` (the circuit was closed then).
        probe = False
        if self._failing and early is None:
            # Open circuit: answer at once; after the cooldown one call (the probe) tries Redis again.
            if self._probing or self._clock() < self._down_until:
                return None
            self._probing = probe = True
        keys, args = self._command(mode, limits, costs)
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._eval(keys, args, early)
        except _ERRORS as exc:
            if isinstance(exc, TimeoutError) and self._channel is not None:
                self._channel.reset()  # a frozen or half-open connection: the next call connects afresh
            self._failed(exc)
            return None
        finally:
            if probe:
                self._probing = False
        if self._failing:
            self._failing = False
            logger.info("rate limiter: Redis answers again; limits are enforced")
        return list(reply)

    async def _eval(self, keys: list[str], args: list[str | int], early: asyncio.Future[Any] | None) -> list[int]:
        channel = self._channel
        if channel is not None:
            try:
                reply = await (early if early is not None else channel.call("EVALSHA", SCRIPT_SHA, len(keys), *keys,
                                                                            *args))
            except NoScriptError:
                reply = await channel.call("EVAL", SCRIPT, len(keys), *keys, *args)
            return list(reply)
        try:
            reply = await self._redis.evalsha(SCRIPT_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or flushed server; EVAL runs the script and caches it for the next EVALSHA.
            reply = await self._redis.eval(SCRIPT, len(keys), *keys, *args)
        return list(reply)

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        self._down_until = now + self._cooldown
        self._failing = True
        if self._on_error is not None:
            self._on_error(exc)
        if now - self._last_warning < LOG_INTERVAL:
            self._suppressed += 1
            return
        # The class name only: messages can carry addresses, and nothing from a URL belongs in logs.
        logger.warning("rate limiter: Redis failed (%s); failing open, requests are not rate limited "
                       "(%d similar errors not logged in the last %.0f s)",
                       type(exc).__name__, self._suppressed, LOG_INTERVAL)
        self._last_warning = now
        self._suppressed = 0
