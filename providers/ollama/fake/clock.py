"""Timestamps as Go's RFC 3339 (nano) formatting prints them: trailing zeros of the fraction trimmed."""

from __future__ import annotations

import time


def _format(seconds: int, nanos: int, offset: int) -> str:
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds + offset))
    if nanos:
        base = f"{base}.{nanos:09d}".rstrip("0")
    if offset == 0:
        return base + "Z"
    sign = "+" if offset > 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"{base}{sign}{hours:02d}:{minutes:02d}"


def utc_now() -> str:
    """Now in UTC with `Z`, as inference responses carry `created_at`."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return _format(seconds, nanos, 0)


def local_time(epoch_ns: int) -> str:
    """A point in time with the local offset, as `/api/ps` prints `expires_at`."""
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    return _format(seconds, nanos, time.localtime(seconds).tm_gmtoff)
