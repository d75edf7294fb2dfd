"""Login and sign-up throttling that holds under concurrency.

Rules (after OWASP's Authentication Cheat Sheet, "Login Throttling"):

- **Counted before verifying.** An attempt is recorded atomically (one Lua script in Redis, one
  synchronous step in process) *before* the password is checked, so N concurrent guesses are N
  counted attempts, never N free verifications. A success takes its own count back.
- **One verification in flight per email.** While a password for an email is being checked, other
  attempts for it answer 429 at once (`Retry-After: 1`) without verifying.
- **Progressive delay, keyed by (email, client address).** The first `pair.free` failures cost
  nothing; after that each attempt must wait `base * 2^(failures - free)` seconds (capped) since the
  previous one. Strangers failing for your email from their addresses do not delay you. A per-address
  budget (`address`) slows one client trying many emails. Counters are forgotten `window` seconds
  after the last attempt.
- **Sign-ups** are counted per client address with the same progressive delay.
- **Redis down** → the in-process store takes over (one warning per 10 s); never a 500.

Answers are 429 `rate_limit_exceeded` (type `rate_limit_error`) with `Retry-After` in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import GatewayError

log = logging.getLogger("pr.auth.throttle")

DEFAULT_WINDOW = 900.0
VERIFY_LOCK_SECONDS = 10.0
LOG_INTERVAL = 10.0
_MAX_DOUBLINGS = 30


@dataclass(frozen=True)
class Policy:
    """`free` attempts without delay, then `base` seconds doubling per further attempt, at most `cap` seconds."""

    free: int
    base: float
    cap: float

    def delay(self, attempts: int) -> float:
        """Seconds the next attempt must wait after the last one, given `attempts` counted so far."""
        if attempts < self.free:
            return 0.0
        return min(self.cap, self.base * float(2 ** min(attempts - self.free, _MAX_DOUBLINGS)))


PAIR_POLICY = Policy(free=5, base=1.0, cap=900.0)
ADDRESS_POLICY = Policy(free=30, base=1.0, cap=900.0)


class AttemptStore(Protocol):
    """Where attempts are counted; every method is atomic with respect to concurrent callers."""

    async def reserve(self, keys: Sequence[tuple[str, Policy]], window: float) -> float:
        """Count one attempt on every key, unless one of them must still wait: then count nothing and
        return the seconds to wait (> 0). Returns 0.0 when the attempt was counted."""
        ...

    async def undo(self, key: str) -> None:
        """Take one counted attempt back (a login that succeeded)."""
        ...

    async def forget(self, key: str) -> None:
        """Drop the key's count."""
        ...

    async def acquire(self, key: str, ttl: float) -> str | None:
        """Take an exclusive lock for `ttl` seconds; a token to release it with, or None when taken."""
        ...

    async def release(self, key: str, token: str) -> None: ...


class MemoryStore:
    """Per-process counters (bounded: the least recently used are dropped first) and locks."""

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._counts: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._locks: dict[str, tuple[str, float]] = {}
        self._max_entries = max_entries
        self._clock = clock

    def _current(self, key: str, window: float, now: float) -> tuple[int, float]:
        entry = self._counts.get(key)
        if entry is None or now - entry[1] >= window:
            return 0, 0.0
        return entry

    async def reserve(self, keys: Sequence[tuple[str, Policy]], window: float) -> float:
        # No await between reading and writing: atomic on the event loop.
        now = self._clock()
        wait = 0.0
        states = []
        for key, policy in keys:
            attempts, last = self._current(key, window, now)
            states.append((key, attempts))
            wait = max(wait, last + policy.delay(attempts) - now if attempts else 0.0)
        if wait > 0:
            return wait
        for key, attempts in states:
            self._counts[key] = (attempts + 1, now)
            self._counts.move_to_end(key)
        while len(self._counts) > self._max_entries:
            self._counts.popitem(last=False)
        return 0.0

    async def undo(self, key: str) -> None:
        entry = self._counts.get(key)
        if entry is not None:
            self._counts[key] = (max(0, entry[0] - 1), entry[1])

    async def forget(self, key: str) -> None:
        self._counts.pop(key, None)

    async def acquire(self, key: str, ttl: float) -> str | None:
        now = self._clock()
        held = self._locks.get(key)
        if held is not None and held[1] > now:
            return None
        if len(self._locks) > self._max_entries:
            self._locks = {name: lock for name, lock in self._locks.items() if lock[1] > now}
        token = secrets.token_hex(8)
        self._locks[key] = (token, now + ttl)
        return token

    async def release(self, key: str, token: str) -> None:
        held = self._locks.get(key)
        if held is not None and held[0] == token:
            del self._locks[key]


_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'n', 't')
  local n = tonumber(v[1]) or 0
  local last = tonumber(v[2]) or 0
  local free = tonumber(ARGV[i * 3 - 1])
  if n >= free then
    local delay = math.min(tonumber(ARGV[i * 3 + 1]), tonumber(ARGV[i * 3]) * 2 ^ math.min(n - free, 30))
    wait = math.max(wait, last + delay - now)
  end
end
if wait > 0 then return math.ceil(wait) end
for _, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, 't', now)
  redis.call('PEXPIRE', key, window)
end
return 0
"""

_UNDO = """
if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('HGET', KEYS[1], 'n') or '0') > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """Counters and locks shared by every replica; each operation is one atomic command or script."""

    def __init__(self, redis: Redis, *, namespace: str = "pr:throttle:") -> None:
        self._redis = redis
        self._namespace = namespace
        self._reserve = redis.register_script(_RESERVE)
        self._undo = redis.register_script(_UNDO)
        self._release = redis.register_script(_RELEASE)

    async def reserve(self, keys: Sequence[tuple[str, Policy]], window: float) -> float:
        args: list[int | float] = [max(1, int(window * 1000))]
        for _key, policy in keys:
            args += [policy.free, int(policy.base * 1000), int(policy.cap * 1000)]
        wait_ms = await self._reserve(keys=[self._namespace + key for key, _ in keys], args=args)
        return int(wait_ms) / 1000

    async def undo(self, key: str) -> None:
        await self._undo(keys=[self._namespace + key])

    async def forget(self, key: str) -> None:
        await self._redis.delete(self._namespace + key)

    async def acquire(self, key: str, ttl: float) -> str | None:
        token = secrets.token_hex(8)
        taken = await self._redis.set(self._namespace + key, token, nx=True, px=max(1, int(ttl * 1000)))
        return token if taken else None

    async def release(self, key: str, token: str) -> None:
        await self._release(keys=[self._namespace + key], args=[token])


_ERRORS = (RedisError, OSError, TimeoutError)


class FallbackStore:
    """`primary` (Redis) while it answers; the in-process `fallback` for any call it fails (fail open to
    a per-replica throttle rather than to none, and never to a 500). Warns at most every 10 s."""

    def __init__(self, primary: AttemptStore, fallback: AttemptStore | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.fallback = fallback or MemoryStore()
        self._clock = clock
        self._last_warning = float("-inf")

    def _failed(self, exc: Exception) -> None:
        now = self._clock()
        if now - self._last_warning >= LOG_INTERVAL:
            self._last_warning = now
            log.warning("login throttle: Redis unavailable (%s); counting in this process", type(exc).__name__)

    async def reserve(self, keys: Sequence[tuple[str, Policy]], window: float) -> float:
        try:
            return await self.primary.reserve(keys, window)
        except _ERRORS as exc:
            self._failed(exc)
            return await self.fallback.reserve(keys, window)

    async def undo(self, key: str) -> None:
        try:
            await self.primary.undo(key)
        except _ERRORS as exc:
            self._failed(exc)
        await self.fallback.undo(key)

    async def forget(self, key: str) -> None:
        try:
            await self.primary.forget(key)
        except _ERRORS as exc:
            self._failed(exc)
        await self.fallback.forget(key)

    async def acquire(self, key: str, ttl: float) -> str | None:
        try:
            return await self.primary.acquire(key, ttl)
        except _ERRORS as exc:
            self._failed(exc)
            token = await self.fallback.acquire(key, ttl)
            return None if token is None else "local:" + token

    async def release(self, key: str, token: str) -> None:
        if token.startswith("local:"):
            await self.fallback.release(key, token.removeprefix("local:"))
            return
        try:
            await self.primary.release(key, token)
        except _ERRORS as exc:  # the lock expires on its own
            self._failed(exc)


def too_many(seconds: float, message: str) -> GatewayError:
    """429 `rate_limit_exceeded` with Retry-After (whole seconds, at least 1)."""
    wait = max(1, math.ceil(seconds))
    return GatewayError(429, "rate_limit_exceeded", message.format(seconds=wait), type="rate_limit_error",
                        headers={"Retry-After": str(wait)})


class Attempt:
    """One admitted login attempt; call `succeeded()` once the password proved right."""

    def __init__(self) -> None:
        self.ok = False

    def succeeded(self) -> None:
        self.ok = True


class LoginThrottle:
    """The login and sign-up throttle (see the module docstring for the rules)."""

    def __init__(self, store: AttemptStore, *, window: float = DEFAULT_WINDOW, pair: Policy = PAIR_POLICY,
                 address: Policy = ADDRESS_POLICY, signup: Policy | None = None,
                 signup_window: float = 3600.0, verify_lock: float = VERIFY_LOCK_SECONDS) -> None:
        self._store = store
        self.window = window
        self.pair = pair
        self.address = address
        self.signup_policy = signup or Policy(free=10, base=30.0, cap=3600.0)
        self.signup_window = signup_window
        self.verify_lock = verify_lock

    @classmethod
    def create(cls, redis: Redis | None, *, signups_per_address: int = 10) -> LoginThrottle:
        """Redis-backed (falling back to in-process) when `redis` is given, else in-process."""
        store: AttemptStore = FallbackStore(RedisStore(redis)) if redis is not None else MemoryStore()
        return cls(store, signup=Policy(free=signups_per_address, base=30.0, cap=3600.0))

    @contextlib.asynccontextmanager
    async def attempt(self, *, ip: str | None, email: str) -> AsyncIterator[Attempt]:
        """Admit one login attempt for `email` from `ip` or raise 429; counted before the caller verifies.

        Use as `async with throttle.attempt(...) as attempt: ... attempt.succeeded()`.
        """
        email_id = _email_id(email)
        lock = "busy:" + email_id
        token = await self._store.acquire(lock, self.verify_lock)
        if token is None:
            raise too_many(1, "Another sign-in for this account is being checked; try again in {seconds} second.")
        try:
            pair_key, address_key = f"pair:{email_id}:{ip or '-'}", f"ip:{ip or '-'}"
            wait = await self._store.reserve([(pair_key, self.pair), (address_key, self.address)], self.window)
            if wait > 0:
                raise too_many(wait, "Too many failed logins; try again in {seconds} seconds.")
            attempt = Attempt()
            yield attempt
            if attempt.ok:
                await self._store.forget(pair_key)
                await self._store.undo(address_key)
        finally:
            await self._store.release(lock, token)

    async def signup(self, *, ip: str | None) -> None:
        """Count one sign-up from `ip`, or raise 429 when the address must wait."""
        wait = await self._store.reserve([(f"signup:{ip or '-'}", self.signup_policy)], self.signup_window)
        if wait > 0:
            raise too_many(wait, "Too many sign-ups from this address; try again in {seconds} seconds.")


def _email_id(email: str) -> str:
    # Hashed so neither Redis nor a memory dump lists who is being attacked.
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
