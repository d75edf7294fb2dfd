"""Rate-limit response headers, from a Decision (they describe the headline limit: the binding RPM,
the key's own when it is tighter than the plan's, see `gateway.inference.plan_limits`).

- `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`: integers (OpenAI's names).
- `x-ratelimit-reset-requests`: time until the limit is back to full, in OpenAI's format, which is
  Go's duration syntax: "12ms", "1s", "1.5s", "6m0s", "1m29.28s", "1h0m0s" (millisecond precision,
  rounded up; "0s" when nothing is used).
- `X-RateLimit-Limit`, `X-RateLimit-Remaining` (seed 001): integers.
- `X-RateLimit-Reset`: whole SECONDS FROM NOW until the limit is back to full, rounded up (0 when full),
  as the IETF RateLimit-Reset field does. Not an epoch: it needs no clock agreement with the client.
- `Retry-After` (only when refused): whole seconds, rounded up, at least 1.
Names are spelled as their specs spell them; HTTP names are case-insensitive, and Starlette lowercases
names given as a mapping (raw ASGI headers must be lowercased by whoever writes them).
"""

from __future__ import annotations

import math

from gateway.ratelimit.base import Decision


def rate_limit_headers(decision: Decision) -> list[tuple[bytes, bytes]]:
    """The headers of a /v1 answer for this decision; `Retry-After` only when it refused."""
    limit, remaining = str(decision.limit).encode(), str(decision.remaining).encode()
    headers = [
        (b"x-ratelimit-limit-requests", limit),
        (b"x-ratelimit-remaining-requests", remaining),
        (b"x-ratelimit-reset-requests", openai_duration(decision.reset_seconds).encode()),
        (b"X-RateLimit-Limit", limit),
        (b"X-RateLimit-Remaining", remaining),
        (b"X-RateLimit-Reset", str(_whole_seconds(decision.reset_seconds)).encode()),
    ]
    if not decision.allowed:
        headers.append((b"Retry-After", str(max(1, _whole_seconds(decision.retry_after))).encode()))
    return headers


def openai_duration(seconds: float) -> str:
    """A duration as OpenAI writes it (Go's time.Duration syntax), in whole milliseconds rounded up."""
    ms = _ceil(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    if hours:
        return f"{hours}h{minutes}m{text}s"
    if minutes:
        return f"{minutes}m{text}s"
    return f"{text}s"


def _whole_seconds(seconds: float) -> int:
    return max(0, _ceil(seconds))


def _ceil(value: float) -> int:
    # Decisions carry whole milliseconds as floats (1.2 s is 1.2000000000000002 * 1000): round away the
    # representation error first, so 1.2 s is 1200 ms, not 1201.
    return math.ceil(round(value, 6))
