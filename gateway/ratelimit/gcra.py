"""GCRA, the arithmetic both limiters share; `ratelimit.lua` mirrors it line for line.

Why GCRA (generic cell rate algorithm) rather than windows: a fixed window lets a client spend its
whole budget just before the window turns and again just after (2x in a moment); a sliding-window
log is exact but stores one entry per request (a day's log of a busy account is large). GCRA keeps
two integers per key and is exact: a limit of N per window W is a bucket of capacity N that drains
continuously at N per W. A burst takes at most N at once; then one unit frees every W/N seconds;
after W seconds of silence the bucket is empty again. It has no window edge at all, so there is no
edge burst: over any span of t seconds at most N + floor(t * N / W) units pass. This is also what
OpenAI's `x-ratelimit-reset-*` headers describe (time until the limit is back to its initial state).

Form: the continuous-state leaky bucket (the equivalent of GCRA's theoretical arrival time): per key
a `level` and the `stamp` (ms) it was written at. Everything is an integer so that Lua's doubles
compute exactly what Python computes:
- time is counted in ticks of `tick_ms` (1 ms for windows up to 100 s; coarser for longer windows so
  that a window is at most 100 000 ticks: 864 ms for a day);
- one unit adds `width` (the window in ticks) to the level; the level drains `rate` (the limit) per tick;
- a request of `cost` units fits when level + cost * width <= capacity (= limit * width);
- a request of cost 0 (TPD admission: tokens are known only afterwards) fits while level < capacity,
  i.e. while the day's tokens are not yet all used; `consume` then adds the real tokens without a
  check, so the last admitted answer may overshoot the budget. The overshoot drains like the rest
  and delays the next admission accordingly (the level is saturated at 2**53, far beyond any limit).
Levels stay below 2**53 (see base.MAX_CAPACITY), the range where a double is an exact integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.ratelimit.base import Limit

MAX_TICKS = 100_000
MAX_LEVEL = 2**53


@dataclass(frozen=True)
class Scale:
    """The integer parameters of one limit."""

    tick_ms: int  # clock resolution
    width: int  # level one unit adds: the window in ticks
    rate: int  # level drained per tick: the limit
    capacity: int  # highest level that still admits: limit x width


@dataclass(frozen=True)
class State:
    level: int
    stamp_ms: int


@dataclass(frozen=True)
class Outcome:
    """What one evaluation decided; `levels` are the levels to store (unchanged when refused)."""

    allowed: bool
    refused: int  # index of the limit that refused (the longest wait), -1 when allowed
    retry_ms: int
    remaining: int  # of the first (headline) limit
    reset_ms: int  # of the first (headline) limit
    levels: tuple[int, ...]


def scale(limit: Limit) -> Scale:
    """Ticks and integer widths for a limit."""
    window_ms = max(1, round(limit.window * 1000))
    tick_ms = -(-window_ms // MAX_TICKS)
    width = -(-window_ms // tick_ms)
    return Scale(tick_ms=tick_ms, width=width, rate=limit.limit, capacity=limit.limit * width)


def drained(state: State | None, now_ms: int, sc: Scale) -> int:
    """The level of a stored state at `now_ms`."""
    if state is None:
        return 0
    elapsed = now_ms // sc.tick_ms - state.stamp_ms // sc.tick_ms
    if elapsed <= 0:
        return state.level
    return max(0, state.level - elapsed * sc.rate)


def wait_ticks(level: int, cost: int, sc: Scale) -> int:
    """Ticks of draining before `cost` units fit (0 when they fit now)."""
    if cost == 0:
        excess = level - sc.capacity
        return 0 if excess < 0 else excess // sc.rate + 1
    excess = level + cost * sc.width - sc.capacity
    return 0 if excess <= 0 else -(-excess // sc.rate)


def ms_until(ticks: int, now_ms: int, sc: Scale) -> int:
    """Milliseconds from `now_ms` to the start of the tick `ticks` ticks ahead."""
    if ticks <= 0:
        return 0
    return (now_ms // sc.tick_ms + ticks) * sc.tick_ms - now_ms


def added(level: int, units: int, sc: Scale) -> int:
    return min(MAX_LEVEL, level + units * sc.width)


def ttl_ms(level: int, now_ms: int, sc: Scale) -> int:
    """How long a stored level matters: until it has drained to zero (then it equals no state at all)."""
    return max(1, ms_until(-(-level // sc.rate), now_ms, sc))


def evaluate(scales: Sequence[Scale], costs: Sequence[int], levels: Sequence[int], now_ms: int, *,
             check: bool = True) -> Outcome:
    """Admit all costs or none; without `check` (consume) always admit."""
    worst, worst_wait = -1, 0
    if check:
        for index, (sc, cost, level) in enumerate(zip(scales, costs, levels, strict=True)):
            wait = ms_until(wait_ticks(level, cost, sc), now_ms, sc)
            if wait > worst_wait:
                worst, worst_wait = index, wait
    allowed = worst < 0
    after = tuple(added(level, cost, sc) if allowed else level
                  for sc, cost, level in zip(scales, costs, levels, strict=True))
    head, level = scales[0], after[0]
    remaining = max(0, (head.capacity - level) // head.width)
    reset_ms = ms_until(-(-level // head.rate), now_ms, head)
    return Outcome(allowed=allowed, refused=worst, retry_ms=worst_wait, remaining=remaining, reset_ms=reset_ms,
                   levels=after)
