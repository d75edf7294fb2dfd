from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.auth.throttle import LoginThrottle, MemoryCounters, RedisCounters
from gateway.errors import GatewayError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _refused(throttle: LoginThrottle, *, ip: str | None, email: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await throttle.check(ip=ip, email=email)
    assert caught.value.status == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"
    return caught.value


async def _fail(throttle: LoginThrottle, times: int, *, ip: str | None, email: str) -> None:
    for _ in range(times):
        await throttle.check(ip=ip, email=email)
        await throttle.failed(ip=ip, email=email)


async def test_email_is_locked_after_its_limit_from_any_address() -> None:
    throttle = LoginThrottle(MemoryCounters(), window=60, email_limit=3, ip_limit=100)
    await _fail(throttle, 3, ip="10.0.0.1", email="a@example.com")
    error = await _refused(throttle, ip="10.0.0.2", email="A@Example.com ")
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    await throttle.check(ip="10.0.0.1", email="b@example.com")


async def test_address_is_locked_after_its_limit_for_any_email() -> None:
    throttle = LoginThrottle(MemoryCounters(), window=60, email_limit=100, ip_limit=3)
    for number in range(3):
        await _fail(throttle, 1, ip="10.0.0.1", email=f"user{number}@example.com")
    await _refused(throttle, ip="10.0.0.1", email="fresh@example.com")
    await throttle.check(ip="10.0.0.2", email="fresh@example.com")


async def test_lock_ends_with_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(MemoryCounters(clock=clock), window=60, email_limit=2, ip_limit=100)
    await _fail(throttle, 2, ip=None, email="a@example.com")
    clock.now += 30
    error = await _refused(throttle, ip=None, email="a@example.com")
    assert error.headers["Retry-After"] == "30"
    clock.now += 30.5
    await throttle.check(ip=None, email="a@example.com")


async def test_success_clears_the_email_but_not_the_address() -> None:
    throttle = LoginThrottle(MemoryCounters(), window=60, email_limit=2, ip_limit=3)
    await _fail(throttle, 1, ip="10.0.0.1", email="a@example.com")
    await throttle.succeeded(email="a@example.com")
    await _fail(throttle, 1, ip="10.0.0.1", email="a@example.com")
    await throttle.check(ip="10.0.0.1", email="a@example.com")
    await _fail(throttle, 1, ip="10.0.0.1", email="b@example.com")
    await _refused(throttle, ip="10.0.0.1", email="c@example.com")


async def test_memory_counters_are_bounded() -> None:
    counters = MemoryCounters(max_entries=10)
    for number in range(50):
        await counters.add(f"k{number}", 60)
    assert len(counters._windows) == 10
    failures, remaining = await counters.count("k49")
    assert failures == 1 and 59 <= remaining <= 60


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_redis_counters_lock_and_are_shared(redis: Redis) -> None:
    first = LoginThrottle(RedisCounters(redis), window=60, email_limit=2, ip_limit=100)
    second = LoginThrottle(RedisCounters(redis), window=60, email_limit=2, ip_limit=100)
    await _fail(first, 1, ip="10.0.0.1", email="a@example.com")
    await _fail(second, 1, ip="10.0.0.2", email="a@example.com")
    error = await _refused(first, ip="10.0.0.3", email="a@example.com")
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    keys = [key.decode() if isinstance(key, bytes) else key for key in await redis.keys("pr:login:*")]
    assert keys and all("a@example.com" not in key for key in keys)
    for key in keys:
        assert 0 < await redis.ttl(key) <= 60
    await second.succeeded(email="a@example.com")
    await first.check(ip="10.0.0.3", email="a@example.com")


async def test_redis_window_expires(redis: Redis) -> None:
    throttle = LoginThrottle(RedisCounters(redis), window=0.2, email_limit=1, ip_limit=100)
    await _fail(throttle, 1, ip=None, email="a@example.com")
    await _refused(throttle, ip=None, email="a@example.com")
    await asyncio.sleep(0.3)
    await throttle.check(ip=None, email="a@example.com")
