"""The Redis limiter: the script's loading and versioning, replicas, TTLs, server time, and failing open."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, RedisError, ResponseError

from gateway.ratelimit import Limit, RedisLimiter
from gateway.ratelimit.redis import SCRIPT, SCRIPT_SHA, SCRIPT_VERSION, create_client
from tests.support.clock import FakeClock

PREFIX = "test:rl:"
RPM5 = Limit("rpm", "acct:a:rpm", 5, 60.0)
RPD = Limit("rpd", "acct:a:rpd", 100, 86400.0)
TPD = Limit("tpd", "acct:a:tpd", 100, 86400.0, cost=0)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = create_client(redis_url, timeout=5.0)
    yield redis
    await redis.aclose()


@pytest.fixture
async def limiter(client: Redis) -> AsyncIterator[RedisLimiter]:
    limiter = RedisLimiter(client, prefix=PREFIX, timeout=5.0)
    yield limiter
    await limiter.aclose()


async def keys(client: Redis) -> list[bytes]:
    return sorted([key async for key in client.scan_iter(match=PREFIX + "*")])


def test_the_script_is_versioned_and_called_by_its_hash() -> None:
    assert SCRIPT_VERSION >= 1
    assert "IF YOU EDIT THIS SCRIPT, BUMP THE VERSION" in SCRIPT
    assert SCRIPT_SHA == hashlib.sha1(SCRIPT.encode()).hexdigest()


def test_keys_carry_the_script_version_and_ids_only(limiter: RedisLimiter) -> None:
    assert limiter.redis_key(RPM5) == f"{PREFIX}v{SCRIPT_VERSION}:acct:a:rpm"


async def test_a_server_without_the_script_gets_it_by_eval(client: Redis, limiter: RedisLimiter) -> None:
    await client.script_flush()

    first = await limiter.hit([RPM5])
    cached = await client.script_exists(SCRIPT_SHA)
    second = await limiter.hit([RPM5])

    assert first.allowed and not first.degraded and first.remaining == 4
    assert cached == [True]
    assert second.allowed and second.remaining == 3


async def test_two_replicas_with_their_own_clients_share_one_limit(redis_url: str) -> None:
    limit = Limit("rpm", "acct:shared:rpm", 50, 3600.0)
    first, second = create_client(redis_url, timeout=5.0), create_client(redis_url, timeout=5.0)
    replicas = [RedisLimiter(first, prefix=PREFIX, timeout=5.0), RedisLimiter(second, prefix=PREFIX, timeout=5.0)]
    try:
        for replica in replicas:  # both connected before the race, so their calls interleave
            await replica.hit([Limit("rpm", "acct:warm-up:rpm", 1000, 60.0)])
        decisions = await asyncio.gather(*(replicas[index % 2].hit([limit]) for index in range(200)))
    finally:
        for replica in replicas:
            await replica.aclose()
        await first.aclose()
        await second.aclose()

    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 50
    assert sum(d.allowed for d in decisions[0::2]) > 0 and sum(d.allowed for d in decisions[1::2]) > 0


async def test_every_key_expires_once_its_state_has_drained(client: Redis, limiter: RedisLimiter) -> None:
    for _ in range(3):
        await limiter.hit([RPM5, RPD])

    ttls = {key: await client.pttl(key) for key in await keys(client)}

    assert set(ttls) == {limiter.redis_key(RPM5).encode(), limiter.redis_key(RPD).encode()}
    assert 35_000 < ttls[limiter.redis_key(RPM5).encode()] <= 36_000  # 3 of 5 per minute drain in 36 s
    assert 2_590_000 < ttls[limiter.redis_key(RPD).encode()] <= 2_592_000  # 3 of 100 per day: 43.2 min


async def test_an_admission_that_costs_nothing_writes_nothing(client: Redis, limiter: RedisLimiter) -> None:
    decision = await limiter.hit([TPD])

    assert decision.allowed and await keys(client) == []


async def test_consumed_tokens_live_as_long_as_they_take_to_drain(client: Redis, limiter: RedisLimiter) -> None:
    await limiter.consume(TPD, 150)  # overshoot: 150 of 100 a day

    ttl = await client.pttl(limiter.redis_key(TPD))

    assert 150 * 864_000 - 1_000 < ttl <= 150 * 864_000


async def test_large_levels_are_stored_as_exact_integers(client: Redis, limiter: RedisLimiter) -> None:
    huge = Limit("tpd", "acct:big:tpd", 40_000_000_000, 86400.0, cost=0)

    await limiter.consume(huge, 40_000_000_000)
    level = await client.hget(limiter.redis_key(huge), "l")
    refused = await limiter.hit([huge])

    assert level == str(40_000_000_000 * 100_000).encode()  # 4e15, past the 14 digits of Lua's %.14g
    assert not refused.allowed and refused.retry_after == pytest.approx(0.864, abs=0.87)


async def test_state_is_stamped_with_the_redis_servers_clock(client: Redis, limiter: RedisLimiter) -> None:
    await limiter.hit([RPM5])

    stamp = await client.hget(limiter.redis_key(RPM5), "t")
    seconds, micros = await client.time()

    assert stamp is not None and abs(seconds * 1000 + micros // 1000 - int(stamp)) < 1000


async def test_units_drain_in_real_time(limiter: RedisLimiter) -> None:
    two_per_second = Limit("rpm", "acct:fast:rpm", 2, 1.0)
    burst = [await limiter.hit([two_per_second]) for _ in range(3)]

    await asyncio.sleep(burst[-1].retry_after + 0.05)
    later = await limiter.hit([two_per_second])

    assert [d.allowed for d in burst] == [True, True, False]
    assert 0.3 < burst[-1].retry_after <= 0.5
    assert later.allowed


# Failing open -------------------------------------------------------------------------------------------------


@pytest.fixture
async def unreachable() -> AsyncIterator[Redis]:
    redis = create_client("redis://:s3cret-password@127.0.0.1:1/0")
    yield redis
    await redis.aclose()


async def test_an_unreachable_redis_admits_flags_and_reports(unreachable: Redis,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    errors: list[Exception] = []
    limiter = RedisLimiter(unreachable, on_error=errors.append)

    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        decision = await limiter.hit([RPM5, RPD])
        await limiter.consume(TPD, 10)  # never raises

    assert decision.allowed and decision.degraded
    assert (decision.limit, decision.retry_after, decision.refused_by) == (5, 0.0, None)
    assert len(errors) == 1 and isinstance(errors[0], RedisError)
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failing open" in warnings[0].getMessage()
    assert "s3cret" not in caplog.text and "127.0.0.1" not in caplog.text


async def test_hit_soon_fails_open_like_hit(unreachable: Redis) -> None:
    errors: list[Exception] = []
    limiter = RedisLimiter(unreachable, on_error=errors.append)
    decision = await limiter.hit_soon([RPM5])
    assert decision.allowed and decision.degraded and len(errors) == 1


async def test_hit_soon_writes_its_command_before_returning(client: Redis, limiter: RedisLimiter) -> None:
    await limiter.hit([RPD])  # the limiter's connection is up
    pending = limiter.hit_soon([RPM5])
    await asyncio.sleep(0.05)  # Redis runs the script meanwhile, though nobody awaited the task's result yet
    assert await client.exists(limiter.redis_key(RPM5)) == 1
    assert (await pending).remaining == 4


async def test_a_hit_soon_cancelled_before_it_ran_leaves_the_connection_in_order(limiter: RedisLimiter) -> None:
    await limiter.hit([RPD])
    limiter.hit_soon([RPM5]).cancel()
    assert (await limiter.hit([RPM5])).remaining == 3  # the cancelled call was counted, its reply skipped


async def test_after_an_error_redis_is_left_alone_for_the_cooldown(unreachable: Redis,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    errors: list[Exception] = []
    clock = FakeClock()
    limiter = RedisLimiter(unreachable, on_error=errors.append, cooldown=1.0, clock=clock)

    with caplog.at_level(logging.WARNING, logger="gateway.ratelimit"):
        await limiter.hit([RPM5])
        during_cooldown = await limiter.hit([RPM5])
        clock.now += 1.0
        await limiter.hit([RPM5])  # the probe: fails again, reported, but not logged again within 10 s
        clock.now += 10.0
        await limiter.hit([RPM5])

    assert during_cooldown.degraded
    assert len(errors) == 3
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and "(1 similar errors" in warnings[1]


async def test_a_redis_that_never_answers_costs_at_most_the_timeout() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # hold the connection open and never answer
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    redis = create_client(f"redis://127.0.0.1:{port}/0", timeout=30.0)
    errors: list[Exception] = []
    limiter = RedisLimiter(redis, on_error=errors.append, timeout=0.2)
    try:
        started = time.perf_counter()
        decision = await limiter.hit([RPM5])
        elapsed = time.perf_counter() - started
    finally:
        await limiter.aclose()
        await redis.aclose()
        await asyncio.sleep(0.05)  # the server's handler sees the client leave and closes its side
        server.close()
        await server.wait_closed()

    assert decision.degraded and decision.allowed
    assert elapsed < 1.5
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)


async def test_a_redis_error_of_any_kind_fails_open(client: Redis) -> None:
    errors: list[Exception] = []
    limiter = RedisLimiter(client, prefix=PREFIX, on_error=errors.append)
    await client.set(limiter.redis_key(RPM5), "not a hash")

    decision = await limiter.hit([RPM5])
    await limiter.aclose()

    assert decision.degraded and decision.allowed
    assert len(errors) == 1 and isinstance(errors[0], ResponseError)


class FlakyRedis:
    """A real client behind a switch: fail the next `failures` calls, or hold calls until `gate` opens."""

    def __init__(self, real: Redis) -> None:
        self.real = real
        self.failures = 0
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def evalsha(self, *args: Any) -> Any:
        self.calls += 1
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Error 111 connecting to 10.0.0.1:6379. Connection refused.")
        return await self.real.evalsha(*args)

    async def eval(self, *args: Any) -> Any:
        return await self.real.eval(*args)


async def test_limits_are_enforced_again_when_redis_recovers(client: Redis, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyRedis(client)
    flaky.failures = 1
    clock = FakeClock()
    limiter = RedisLimiter(cast(Redis, flaky), prefix=PREFIX, clock=clock)

    with caplog.at_level(logging.INFO, logger="gateway.ratelimit"):
        failed = await limiter.hit([RPM5])
        clock.now += 1.0
        recovered = await limiter.hit([RPM5])

    assert failed.degraded
    assert not recovered.degraded and recovered.remaining == 4
    assert "answers again" in caplog.text


async def test_only_one_call_probes_a_failed_redis(client: Redis) -> None:
    flaky = FlakyRedis(client)
    flaky.failures = 1
    clock = FakeClock()
    limiter = RedisLimiter(cast(Redis, flaky), prefix=PREFIX, clock=clock)
    await limiter.hit([RPM5])
    clock.now += 1.0
    flaky.gate.clear()

    probe = asyncio.create_task(limiter.hit([RPM5]))
    await asyncio.sleep(0)
    others = [await limiter.hit([RPM5]) for _ in range(5)]
    flaky.gate.set()
    probed = await probe

    assert flaky.calls == 2  # the first failure and the probe
    assert all(d.degraded for d in others)
    assert not probed.degraded and probed.remaining == 4
