"""The in-process limiter (no REDIS_URL): the same GCRA as Redis, for a single replica."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence

from gateway.ratelimit import gcra
from gateway.ratelimit.base import Decision, Limit, check_limits, check_units, to_decision

_FIRST_SWEEP = 1024


class MemoryLimiter:
    """GCRA state in a dict; `hit` never awaits, so on one event loop it is atomic without a lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key -> (state, ms at which its level has drained to zero and it can be forgotten)
        self._states: dict[str, tuple[gcra.State, int]] = {}
        self._sweep_at = _FIRST_SWEEP

    async def hit(self, limits: Sequence[Limit]) -> Decision:
        """Admit against every limit or refuse; a refusal consumes nothing."""
        check_limits(limits)
        return to_decision(limits, self._apply(limits, [limit.cost for limit in limits], check=True))

    def hit_soon(self, limits: Sequence[Limit]) -> asyncio.Future[Decision]:
        """`hit`, decided at once: the future is already done (no task, nothing to overlap)."""
        check_limits(limits)
        decided: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        decided.set_result(to_decision(limits, self._apply(limits, [limit.cost for limit in limits], check=True)))
        return decided

    async def consume(self, limit: Limit, units: int) -> None:
        """Count units after the fact; never refuses."""
        check_units(units)
        if units:
            self._apply([limit], [units], check=False)

    async def aclose(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        """Keys currently held (expired ones linger until the next sweep)."""
        return len(self._states)

    def _apply(self, limits: Sequence[Limit], costs: Sequence[int], *, check: bool) -> gcra.Outcome:
        now_ms = self._now_ms()
        scales = [gcra.scale(limit) for limit in limits]
        levels = [gcra.drained(self._state(limit.key), now_ms, sc) for limit, sc in zip(limits, scales, strict=True)]
        outcome = gcra.evaluate(scales, costs, levels, now_ms, check=check)
        if outcome.allowed:
            for limit, sc, cost, level in zip(limits, scales, costs, outcome.levels, strict=True):
                if cost:
                    self._states[limit.key] = (gcra.State(level, now_ms), now_ms + gcra.ttl_ms(level, now_ms, sc))
            self._sweep(now_ms)
        return outcome

    def _state(self, key: str) -> gcra.State | None:
        entry = self._states.get(key)
        return entry[0] if entry is not None else None

    def _sweep(self, now_ms: int) -> None:
        # Amortised O(1): a full pass each time the dict has doubled since the last one.
        if len(self._states) < self._sweep_at:
            return
        self._states = {key: entry for key, entry in self._states.items() if entry[1] > now_ms}
        self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._states))

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000 + 0.5)
