"""The in-process limiter with a fake clock: exact GCRA arithmetic, limits' validation, bounded memory."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ratelimit import Limit, MemoryLimiter
from gateway.ratelimit.base import MAX_CAPACITY
from gateway.ratelimit.gcra import scale
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> MemoryLimiter:
    return MemoryLimiter(clock=clock)


RPM5 = Limit("rpm", "acct:a:rpm", 5, 60.0)


async def test_retry_after_and_reset_are_exact(limiter: MemoryLimiter) -> None:
    decisions = [await limiter.hit([RPM5]) for _ in range(6)]

    assert [d.reset_seconds for d in decisions] == [12.0, 24.0, 36.0, 48.0, 60.0, 60.0]
    assert decisions[-1].retry_after == 12.0


async def test_the_refused_request_passes_exactly_at_retry_after(limiter: MemoryLimiter, clock: FakeClock) -> None:
    for _ in range(5):
        await limiter.hit([RPM5])

    clock.now += 11.999
    early = await limiter.hit([RPM5])
    clock.now += 0.001
    on_time = await limiter.hit([RPM5])

    assert not early.allowed and early.retry_after == pytest.approx(0.001)
    assert on_time.allowed


async def test_a_limit_that_does_not_divide_its_window_still_admits_exactly_limit(limiter: MemoryLimiter,
                                                                                   clock: FakeClock) -> None:
    seven = Limit("rpm", "acct:a:rpm", 7, 60.0)
    burst = [await limiter.hit([seven]) for _ in range(8)]

    clock.now += burst[-1].retry_after
    after_wait = await limiter.hit([seven])

    assert [d.allowed for d in burst] == [True] * 7 + [False]
    assert burst[-1].retry_after == 8.572  # 60/7 s = 8571.43 ms, rounded up to the next millisecond
    assert after_wait.allowed


async def test_day_windows_count_in_ticks_of_864_ms(limiter: MemoryLimiter, clock: FakeClock) -> None:
    rpd = Limit("rpd", "acct:a:rpd", 1000, 86400.0)
    clock.now = 864.0  # on a tick boundary, so the wait is whole ticks
    for _ in range(1000):
        await limiter.hit([rpd])

    refused = await limiter.hit([rpd])

    assert scale(rpd).tick_ms == 864 and scale(rpd).width == 100_000
    assert not refused.allowed and refused.retry_after == 86.4


async def test_tpd_overshoot_delays_admission_by_the_overshoot(limiter: MemoryLimiter, clock: FakeClock) -> None:
    tpd = Limit("tpd", "acct:a:tpd", 1000, 86400.0, cost=0)
    clock.now = 864.0
    await limiter.consume(tpd, 999)
    admitted = await limiter.hit([tpd])  # 999 < 1000: admitted, the answer may use any number of tokens
    await limiter.consume(tpd, 500)

    refused = await limiter.hit([tpd])

    assert admitted.allowed
    assert refused.refused_by == "tpd"
    # 1499 used: admitted again once the count is below 1000, i.e. 499 tokens (86.4 s each) and a tick later.
    assert refused.retry_after == pytest.approx(499 * 86.4 + 0.864)


async def test_headline_numbers_describe_the_first_limit(limiter: MemoryLimiter) -> None:
    key = Limit("key_rpm", "key:k:rpm", 1, 60.0)
    await limiter.hit([RPM5, key])

    refused = await limiter.hit([RPM5, key])

    assert refused.refused_by == "key_rpm" and refused.retry_after == 60.0
    assert (refused.limit, refused.remaining, refused.reset_seconds) == (5, 4, 12.0)


async def test_expired_state_is_forgotten(limiter: MemoryLimiter, clock: FakeClock) -> None:
    for index in range(2000):
        await limiter.hit([Limit("rpm", f"acct:{index}:rpm", 10, 1.0)])
    clock.now += 2.0

    for index in range(100):
        await limiter.hit([Limit("rpm", f"acct:new{index}:rpm", 10, 1.0)])

    assert len(limiter) <= 100


async def test_admission_of_cost_zero_stores_nothing(limiter: MemoryLimiter) -> None:
    await limiter.hit([Limit("tpd", "acct:a:tpd", 1000, 86400.0, cost=0)])

    assert len(limiter) == 0


async def test_aclose_forgets_everything(limiter: MemoryLimiter) -> None:
    await limiter.hit([RPM5])

    await limiter.aclose()

    assert len(limiter) == 0 and (await limiter.hit([RPM5])).remaining == 4


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"limit": 0}, "limit must be an integer >= 1"),
    ({"limit": True}, "limit must be an integer >= 1"),
    ({"limit": 2.5}, "limit must be an integer >= 1"),
    ({"window": 0.0}, "window must be at least 1 ms"),
    ({"window": float("nan")}, "window must be at least 1 ms"),
    ({"cost": -1}, "cost must be an integer in 0..limit"),
    ({"cost": 6}, "cost must be an integer in 0..limit"),
    ({"key": "acct:a b"}, "key without spaces"),
    ({"key": ""}, "key without spaces"),
    ({"limit": MAX_CAPACITY}, "too large"),
])
def test_limits_are_validated(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"name": "rpm", "key": "acct:a:rpm", "limit": 5, "window": 60.0}
    fields.update(kwargs)

    with pytest.raises(ValueError, match=message):
        Limit(**fields)  # type: ignore[arg-type]


def test_the_largest_daily_limits_are_accepted() -> None:
    assert Limit("tpd", "acct:a:tpd", 40_000_000_000, 86400.0, cost=0).limit == 40_000_000_000


class ReferenceBucket:
    """GCRA in exact rationals and continuous milliseconds: the definition the integers must match."""

    def __init__(self, limit: int, window_ms: int) -> None:
        self.limit, self.window_ms = limit, window_ms
        self.used, self.at = Fraction(0), 0

    def hit(self, now_ms: int, cost: int) -> bool:
        self.used = max(Fraction(0), self.used - Fraction((now_ms - self.at) * self.limit, self.window_ms))
        self.at = now_ms
        if self.used + cost > self.limit:
            return False
        self.used += cost
        return True


GAPS = st.one_of(st.integers(0, 20), st.integers(0, 5000))  # short gaps reach refusals often


@settings(max_examples=150, deadline=None)
@given(limit=st.integers(1, 50), window_ms=st.integers(1, 100_000),
       steps=st.lists(st.tuples(GAPS, st.integers(1, 3), st.sampled_from(["gap", "edge", "before"])), max_size=60))
def test_admissions_match_an_exact_rational_bucket(limit: int, window_ms: int,
                                                   steps: list[tuple[int, int, str]]) -> None:
    # Windows up to 100 s tick every millisecond, where the integer form is exactly GCRA. After a refusal,
    # "edge" waits exactly retry_after and "before" one millisecond less (with the refused cost), so the
    # boundaries themselves are compared.
    reference = ReferenceBucket(limit, window_ms)
    clock = FakeClock(0.0)
    memory = MemoryLimiter(clock=clock)
    now_ms, retry_ms, refused_units = 0, 0, 0

    async def replay() -> None:
        nonlocal now_ms, retry_ms, refused_units
        for gap_ms, cost, mode in steps:
            units = min(cost, limit)
            if retry_ms and mode != "gap":
                gap_ms, units = (retry_ms if mode == "edge" else retry_ms - 1), refused_units
            now_ms += gap_ms
            clock.now = now_ms / 1000
            decision = await memory.hit([Limit("rpm", "acct:p:rpm", limit, window_ms / 1000, cost=units)])
            assert decision.allowed == reference.hit(now_ms, units), (now_ms, units)
            if retry_ms and mode != "gap":
                assert decision.allowed == (mode == "edge")  # retry_after is the shortest wait that works
            retry_ms, refused_units = round(decision.retry_after * 1000), units

    asyncio.run(replay())
