"""Rate-limit headers: OpenAI's names and duration format, seed 001's names, Retry-After on refusals."""

from __future__ import annotations

import re

import pytest

from gateway.ratelimit import Decision, rate_limit_headers
from gateway.ratelimit.headers import openai_duration

# Go's time.Duration syntax, which OpenAI's values follow ("12ms", "1s", "6m0s").
GO_DURATION = re.compile(r"^(0s|[1-9]\d*ms|(\d+h)?(\d+m)?\d+(\.\d{1,3})?s)$")


def decision(*, allowed: bool = True, remaining: int = 59, reset: float = 1.0, retry: float = 0.0) -> Decision:
    return Decision(allowed=allowed, limit=60, remaining=remaining, reset_seconds=reset, retry_after=retry,
                    refused_by=None if allowed else "rpm")


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, "0s"),
    (0.012, "12ms"),
    (0.0001, "1ms"),  # rounded up: never tell a client to come back early
    (0.999, "999ms"),
    (1.0, "1s"),
    (1.2, "1.2s"),  # 1.2 * 1000 is 1200.0000000000002 in floats: still 1.2 s
    (1.5, "1.5s"),
    (17.281, "17.281s"),
    (60.0, "1m0s"),
    (89.28, "1m29.28s"),
    (360.0, "6m0s"),
    (3600.0, "1h0m0s"),
    (86400.0, "24h0m0s"),
    (-3.0, "0s"),
])
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert openai_duration(seconds) == text
    assert GO_DURATION.match(text)


def test_an_admitted_request_gets_both_families_and_no_retry_after() -> None:
    headers = rate_limit_headers(decision(remaining=59, reset=1.0))

    assert headers == [
        (b"x-ratelimit-limit-requests", b"60"),
        (b"x-ratelimit-remaining-requests", b"59"),
        (b"x-ratelimit-reset-requests", b"1s"),
        (b"X-RateLimit-Limit", b"60"),
        (b"X-RateLimit-Remaining", b"59"),
        (b"X-RateLimit-Reset", b"1"),
    ]


def test_reset_is_whole_seconds_from_now_rounded_up() -> None:
    values = dict(rate_limit_headers(decision(reset=36.2)))

    assert values[b"X-RateLimit-Reset"] == b"37"
    assert values[b"x-ratelimit-reset-requests"] == b"36.2s"


def test_a_full_limit_resets_in_zero_seconds() -> None:
    values = dict(rate_limit_headers(decision(remaining=60, reset=0.0)))

    assert values[b"X-RateLimit-Reset"] == b"0" and values[b"x-ratelimit-reset-requests"] == b"0s"


@pytest.mark.parametrize(("retry", "header"), [(12.0, b"12"), (12.001, b"13"), (0.2, b"1"), (0.0, b"1")])
def test_a_refusal_carries_retry_after_in_whole_seconds_rounded_up(retry: float, header: bytes) -> None:
    headers = rate_limit_headers(decision(allowed=False, remaining=0, reset=60.0, retry=retry))

    assert headers[-1] == (b"Retry-After", header)
    assert dict(headers)[b"x-ratelimit-remaining-requests"] == b"0"


def test_header_names_are_unique_regardless_of_case() -> None:
    names = [name.lower() for name, _ in rate_limit_headers(decision(allowed=False, remaining=0, retry=3.0))]

    assert len(names) == len(set(names)) == 7
