"""One behaviour suite, run against both limiters: they must answer alike.

Time passes through `backend.advance(seconds)`: the memory limiter has a fake clock; for Redis (which
uses its own server clock) the stored stamps are moved into the past by the same amount. Redis timings
are also moved by the few real milliseconds a test takes, hence `backend.slack` in timing assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.ratelimit import Decision, Limit, Limiter, MemoryLimiter, RedisLimiter
from gateway.ratelimit.redis import create_client
from tests.support.clock import FakeClock

PREFIX = "test:rl:"


@dataclass
class Backend:
    limiter: Limiter
    advance: Callable[[float], Awaitable[None]]
    slack: float  # seconds of tolerance on timings (0: exact)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.now += seconds

        limiter = MemoryLimiter(clock=clock)
        yield Backend(limiter, advance_clock, slack=0.0)
        await limiter.aclose()
        return
    # Generous timeouts: this suite is about semantics, and a loaded CI machine must not make it fail open.
    client = create_client(request.getfixturevalue("redis_url"), timeout=5.0)

    async def advance_redis(seconds: float) -> None:
        shift = round(seconds * 1000)
        async for key in client.scan_iter(match=PREFIX + "*"):
            ttl = await client.pttl(key)
            if ttl <= shift:
                await client.delete(key)
                continue
            await client.hincrby(key, "t", -shift)
            await client.pexpire(key, ttl - shift)

    redis_limiter = RedisLimiter(client, prefix=PREFIX, timeout=5.0)
    yield Backend(redis_limiter, advance_redis, slack=0.25)
    await redis_limiter.aclose()
    await client.aclose()


def rpm(limit: int, account: str = "a") -> Limit:
    return Limit("rpm", f"acct:{account}:rpm", limit, 60.0)


def rpd(limit: int, account: str = "a") -> Limit:
    return Limit("rpd", f"acct:{account}:rpd", limit, 86400.0)


def tpd(limit: int, account: str = "a") -> Limit:
    return Limit("tpd", f"acct:{account}:tpd", limit, 86400.0, cost=0)


def key_rpm(limit: int, key: str) -> Limit:
    return Limit("key_rpm", f"key:{key}:rpm", limit, 60.0)


async def hits(limiter: Limiter, limits: list[Limit], count: int) -> list[Decision]:
    return [await limiter.hit(limits) for _ in range(count)]


async def test_limit_exactly_reached_then_refused(backend: Backend) -> None:
    allowed = await hits(backend.limiter, [rpm(5)], 5)
    refused = await backend.limiter.hit([rpm(5)])

    assert [d.allowed for d in allowed] == [True] * 5
    assert [d.remaining for d in allowed] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after == 0 and d.refused_by is None for d in allowed)
    assert not refused.allowed and refused.refused_by == "rpm" and not refused.degraded
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(12.0, abs=backend.slack + 0.001)  # one unit frees every 60/5 s
    assert refused.reset_seconds == pytest.approx(60.0, abs=backend.slack + 0.001)


async def test_hit_soon_decides_as_hit_does_even_when_started_together(backend: Backend) -> None:
    started = [backend.limiter.hit_soon([rpm(5)]) for _ in range(7)]  # all written before any is awaited
    decisions = [await pending for pending in started]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    assert all(d.refused_by == "rpm" and not d.degraded for d in decisions[5:])


async def test_hit_soon_refuses_bad_calls_at_once(backend: Backend) -> None:
    with pytest.raises(ValueError, match="at least one limit"):
        backend.limiter.hit_soon([])


async def test_refused_request_passes_once_retry_after_has_passed(backend: Backend) -> None:
    await hits(backend.limiter, [rpm(5)], 5)
    refused = await backend.limiter.hit([rpm(5)])

    await backend.advance(refused.retry_after - 0.3)
    still_refused = await backend.limiter.hit([rpm(5)])
    await backend.advance(0.3 + backend.slack)
    admitted = await backend.limiter.hit([rpm(5)])

    assert not still_refused.allowed
    assert admitted.allowed and admitted.remaining == 0


async def test_reset_seconds_counts_until_the_headline_is_full_again(backend: Backend) -> None:
    decisions = await hits(backend.limiter, [rpm(5)], 3)

    assert [d.reset_seconds for d in decisions] == pytest.approx([12.0, 24.0, 36.0], abs=backend.slack + 0.001)


async def test_a_refusal_by_rpd_consumes_no_rpm(backend: Backend) -> None:
    limits = [rpm(10), rpd(2)]
    await hits(backend.limiter, limits, 2)

    refused = await backend.limiter.hit(limits)
    after = await backend.limiter.hit([rpm(10)])

    assert not refused.allowed and refused.refused_by == "rpd"
    assert refused.limit == 10 and refused.remaining == 8  # headers describe the account RPM
    assert refused.retry_after == pytest.approx(43200.0, abs=1.0)  # one of 2 per day frees after half a day
    assert after.allowed and after.remaining == 7


async def test_a_refusal_by_rpm_consumes_no_rpd(backend: Backend) -> None:
    limits = [rpm(1), rpd(5)]
    assert (await backend.limiter.hit(limits)).allowed
    refused = await backend.limiter.hit(limits)

    daily = await backend.limiter.hit([rpd(5)])

    assert not refused.allowed and refused.refused_by == "rpm"
    assert daily.allowed and daily.remaining == 3  # 5 - the admitted one - this one


async def test_refused_by_names_the_limit_with_the_longest_wait(backend: Backend) -> None:
    limits = [rpm(1), rpd(1)]
    await backend.limiter.hit(limits)

    refused = await backend.limiter.hit(limits)

    assert refused.refused_by == "rpd"
    assert refused.retry_after == pytest.approx(86400.0, abs=1.0)


async def test_no_second_burst_across_a_window_edge(backend: Backend) -> None:
    # A fixed window ending between the two bursts would admit 2 x 10 within a second.
    first = await hits(backend.limiter, [rpm(10)], 10)
    await backend.advance(1.0)
    across_the_edge = await hits(backend.limiter, [rpm(10)], 10)

    assert all(d.allowed for d in first)
    assert not any(d.allowed for d in across_the_edge)


async def test_units_free_up_one_by_one_at_the_limits_rate(backend: Backend) -> None:
    await hits(backend.limiter, [rpm(10)], 10)

    await backend.advance(6.0 + backend.slack)  # 60 s / 10
    one_more = await hits(backend.limiter, [rpm(10)], 2)
    await backend.advance(30.0)
    five_more = await hits(backend.limiter, [rpm(10)], 6)

    assert [d.allowed for d in one_more] == [True, False]
    assert [d.allowed for d in five_more] == [True] * 5 + [False]


async def test_a_quiet_window_restores_the_full_burst(backend: Backend) -> None:
    await hits(backend.limiter, [rpm(10)], 10)

    await backend.advance(60.0)
    burst = await hits(backend.limiter, [rpm(10)], 11)

    assert [d.allowed for d in burst] == [True] * 10 + [False]


async def test_key_and_account_limits_are_independent(backend: Backend) -> None:
    account = rpm(5)
    first_key = await hits(backend.limiter, [account, key_rpm(2, "k1")], 3)
    second_key = await hits(backend.limiter, [account, key_rpm(2, "k2")], 2)
    third_key = await hits(backend.limiter, [account, key_rpm(2, "k3")], 2)

    assert [d.allowed for d in first_key] == [True, True, False]
    assert first_key[2].refused_by == "key_rpm" and first_key[2].remaining == 3  # the refusal took no account unit
    assert [d.allowed for d in second_key] == [True, True]
    assert [d.remaining for d in second_key] == [2, 1]
    assert [d.allowed for d in third_key] == [True, False]
    assert third_key[1].refused_by == "rpm"


async def test_accounts_do_not_share_limits(backend: Backend) -> None:
    await hits(backend.limiter, [rpm(2, "a")], 2)

    other = await backend.limiter.hit([rpm(2, "b")])

    assert other.allowed and other.remaining == 1


async def test_tpd_admits_until_the_days_tokens_are_used_then_refuses(backend: Backend) -> None:
    limits = [rpm(100), tpd(100)]
    first = await backend.limiter.hit(limits)
    await backend.limiter.consume(tpd(100), 60)
    second = await backend.limiter.hit(limits)
    await backend.limiter.consume(tpd(100), 60)  # the last admitted answer overshoots: 120 of 100

    refused = await backend.limiter.hit(limits)
    rpm_after = await backend.limiter.hit([rpm(100)])

    assert first.allowed and second.allowed
    assert not refused.allowed and refused.refused_by == "tpd"
    # 20 tokens of overshoot plus one more must drain, at 100 tokens per 86 400 s (864 s per token).
    assert refused.retry_after == pytest.approx(20 * 864 + 0.864, abs=1.0)
    assert rpm_after.remaining == 97  # the refusal took no request unit


async def test_tpd_admits_again_once_below_the_limit(backend: Backend) -> None:
    limits = [rpm(100), tpd(100)]
    await backend.limiter.consume(tpd(100), 100)
    refused = await backend.limiter.hit(limits)

    await backend.advance(refused.retry_after + 1.0)  # Redis: moving stamps is exact to a tick (864 ms a day)
    admitted = await backend.limiter.hit(limits)

    assert not refused.allowed and refused.refused_by == "tpd"
    assert refused.retry_after == pytest.approx(0.864, abs=0.9)  # below the limit as soon as one tick drained
    assert admitted.allowed


async def test_consume_never_refuses_and_counts_against_later_hits(backend: Backend) -> None:
    await backend.limiter.consume(rpm(5), 1000)

    refused = await backend.limiter.hit([rpm(5)])

    assert not refused.allowed
    assert refused.retry_after == pytest.approx(996 * 12.0, abs=backend.slack + 0.001)


async def test_consuming_nothing_changes_nothing(backend: Backend) -> None:
    await backend.limiter.consume(rpm(5), 0)

    decision = await backend.limiter.hit([rpm(5)])

    assert decision.allowed and decision.remaining == 4


async def test_concurrent_hits_admit_exactly_the_limit(backend: Backend) -> None:
    # An hour's window: 50 units need 72 s each to free, so the test's own duration frees none.
    limit = Limit("rpm", "acct:busy:rpm", 50, 3600.0)

    decisions = await asyncio.gather(*(backend.limiter.hit([limit]) for _ in range(200)))

    assert not any(d.degraded for d in decisions)
    assert sum(d.allowed for d in decisions) == 50
    assert all(d.refused_by == "rpm" for d in decisions if not d.allowed)


async def test_bad_calls_are_refused_loudly(backend: Backend) -> None:
    with pytest.raises(ValueError, match="at least one limit"):
        await backend.limiter.hit([])
    with pytest.raises(ValueError, match="same key twice"):
        await backend.limiter.hit([rpm(5), Limit("rpd", "acct:a:rpm", 5, 86400.0)])
    with pytest.raises(ValueError, match="whole number"):
        await backend.limiter.consume(tpd(100), -1)
