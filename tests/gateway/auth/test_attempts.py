"""AttemptThrottle: per-key limits in windows, in-process and shared through Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from gateway.auth.attempts import AttemptThrottle, redeem_limits, reset_limits
from gateway.auth.throttle import MemoryStore
from gateway.errors import GatewayError
from tests.support.clock import FakeClock


async def test_each_key_has_its_own_limit_and_the_window_ends() -> None:
    clock = FakeClock()
    throttle = AttemptThrottle(MemoryStore(clock=clock), window=60.0, what="tries")
    limits = [("a", 2), ("b", 5)]
    for _ in range(2):
        await throttle.reserve(limits)
    with pytest.raises(GatewayError) as caught:
        await throttle.reserve(limits)
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "60"
    await throttle.reserve([("b", 5)])  # b still has room
    clock.now += 61
    await throttle.reserve(limits)


async def test_an_undone_attempt_does_not_count() -> None:
    throttle = AttemptThrottle(MemoryStore(clock=FakeClock()), window=60.0, what="tries")
    for _ in range(5):
        await throttle.reserve([("a", 2)])
        await throttle.undo([("a", 2)])
    await throttle.reserve([("a", 2)])


async def test_limits_are_shared_by_replicas_through_redis(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    try:
        first, second = (AttemptThrottle.create(client, namespace="pr:test:", window=60.0, what="tries")
                         for client in clients)
        limits = reset_limits("ada@example.com", "10.0.0.1")
        for _ in range(5):
            await first.reserve(limits)
        with pytest.raises(GatewayError):
            await second.reserve(limits)
        await second.reserve(redeem_limits("acct", "10.0.0.2"))
    finally:
        for client in clients:
            await client.aclose()


def test_email_keys_are_hashed() -> None:
    assert all("ada" not in key for key, _ in reset_limits("ada@example.com", None))
