"""The login/sign-up throttle: counted before verifying, one verification per email, progressive delay
keyed by (email, client), Redis shared and falling back to in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.auth.throttle import (
    AttemptStore,
    FallbackStore,
    LoginThrottle,
    MemoryStore,
    Policy,
    RedisStore,
)
from gateway.errors import GatewayError
from gateway.ratelimit.redis import create_client
from tests.support.clock import FakeClock

PAIR = Policy(free=3, base=1.0, cap=8.0)
ADDRESS = Policy(free=100, base=1.0, cap=8.0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[AttemptStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisStore(client)
    await client.aclose()


async def _login(throttle: LoginThrottle, *, ip: str | None, email: str, right: bool = False) -> None:
    async with throttle.attempt(ip=ip, email=email) as attempt:
        if right:
            attempt.succeeded()


async def _refused(throttle: LoginThrottle, *, ip: str | None, email: str) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        await _login(throttle, ip=ip, email=email)
    assert caught.value.status == 429 and caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"
    return caught.value


def test_policy_delay_doubles_after_the_free_attempts_and_is_capped() -> None:
    assert [PAIR.delay(n) for n in range(8)] == [0, 0, 0, 1, 2, 4, 8, 8]
    assert Policy(free=1, base=1, cap=900).delay(10**9) == 900  # no overflow


async def test_concurrent_attempts_are_counted_before_any_is_verified(store: AttemptStore) -> None:
    # failing input 11: 40 concurrent attempts against a limit of 5 must admit exactly 5
    results = await asyncio.gather(*(store.reserve([("pair:x", Policy(5, 1.0, 900.0))], 60) for _ in range(40)))
    assert sum(1 for wait in results if wait == 0) == 5
    assert all(0 < wait <= 1.0 for wait in results if wait)


async def test_one_verification_in_flight_per_email(store: AttemptStore) -> None:
    throttle = LoginThrottle(store, pair=PAIR, address=ADDRESS)
    async with throttle.attempt(ip="10.0.0.1", email="a@example.com"):
        error = await _refused(throttle, ip="10.0.0.2", email="A@example.com ")
        assert error.headers["Retry-After"] == "1"
        await _login(throttle, ip="10.0.0.2", email="b@example.com")  # another email is not blocked
    await _login(throttle, ip="10.0.0.2", email="a@example.com")


async def test_strangers_failures_do_not_delay_the_owner(store: AttemptStore) -> None:
    # failing input 12: five failures from other addresses locked the owner out for 15 minutes
    throttle = LoginThrottle(store, pair=PAIR, address=ADDRESS)
    for number in range(10):
        for _ in range(3):
            await _login(throttle, ip=f"192.0.2.{number}", email="owner@example.com")
    await _login(throttle, ip="10.0.0.1", email="owner@example.com", right=True)


async def test_failures_from_one_client_delay_it_progressively() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(MemoryStore(clock=clock), pair=PAIR, address=ADDRESS)
    for _ in range(3):
        await _login(throttle, ip="10.0.0.1", email="a@example.com")
    assert (await _refused(throttle, ip="10.0.0.1", email="a@example.com")).headers["Retry-After"] == "1"
    clock.now += 1
    await _login(throttle, ip="10.0.0.1", email="a@example.com")  # the 4th attempt, after 1 s
    assert (await _refused(throttle, ip="10.0.0.1", email="a@example.com")).headers["Retry-After"] == "2"
    clock.now += 2
    await _login(throttle, ip="10.0.0.1", email="a@example.com")
    clock.now += 3
    assert (await _refused(throttle, ip="10.0.0.1", email="a@example.com")).headers["Retry-After"] == "1"
    clock.now += 1
    await _login(throttle, ip="10.0.0.1", email="a@example.com", right=True)  # success clears the pair
    await _login(throttle, ip="10.0.0.1", email="a@example.com")


async def test_one_address_trying_many_emails_is_slowed() -> None:
    throttle = LoginThrottle(MemoryStore(), pair=PAIR, address=Policy(free=5, base=1.0, cap=8.0))
    for number in range(5):
        await _login(throttle, ip="10.0.0.1", email=f"user{number}@example.com")
    await _refused(throttle, ip="10.0.0.1", email="fresh@example.com")
    await _login(throttle, ip="10.0.0.2", email="fresh@example.com")


async def test_counts_are_forgotten_after_the_window() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(MemoryStore(clock=clock), window=60, pair=PAIR, address=ADDRESS)
    for _ in range(3):
        await _login(throttle, ip=None, email="a@example.com")
    clock.now += 60
    for _ in range(3):
        await _login(throttle, ip=None, email="a@example.com")


async def test_memory_store_is_bounded() -> None:
    store = MemoryStore(max_entries=10)
    for number in range(50):
        await store.reserve([(f"k{number}", PAIR)], 60)
    assert len(store._counts) == 10


async def test_redis_counts_are_shared_hashed_and_expire(redis: Redis) -> None:
    first = LoginThrottle(RedisStore(redis), window=60, pair=PAIR, address=ADDRESS)
    second = LoginThrottle(RedisStore(redis), window=60, pair=PAIR, address=ADDRESS)
    await _login(first, ip="10.0.0.1", email="a@example.com")
    await _login(second, ip="10.0.0.1", email="a@example.com")
    await _login(first, ip="10.0.0.1", email="a@example.com")
    await _refused(second, ip="10.0.0.1", email="a@example.com")
    keys = [key.decode() for key in await redis.keys("pr:throttle:*")]
    assert keys and all("a@example.com" not in key for key in keys)
    for key in keys:
        assert 0 < await redis.ttl(key) <= 60


async def test_sign_ups_are_throttled_per_address(store: AttemptStore) -> None:
    throttle = LoginThrottle(store, signup=Policy(free=2, base=30.0, cap=3600.0))
    await throttle.signup(ip="10.0.0.1")
    await throttle.signup(ip="10.0.0.1")
    with pytest.raises(GatewayError) as caught:
        await throttle.signup(ip="10.0.0.1")
    assert caught.value.status == 429 and 1 <= int(caught.value.headers["Retry-After"]) <= 30
    await throttle.signup(ip="10.0.0.2")


async def test_redis_down_falls_back_to_in_process(caplog: pytest.LogCaptureFixture) -> None:
    # failing input 13: with Redis stopped every login was a 500
    dead = create_client("redis://127.0.0.1:9/0", timeout=0.2)
    try:
        throttle = LoginThrottle(FallbackStore(RedisStore(dead)), pair=PAIR, address=ADDRESS)
        for _ in range(3):
            await _login(throttle, ip="10.0.0.1", email="a@example.com")
        await _refused(throttle, ip="10.0.0.1", email="a@example.com")  # still throttled, in process
        await throttle.signup(ip="10.0.0.1")
    finally:
        await dead.aclose()
    assert any("Redis unavailable" in record.message for record in caplog.records)


