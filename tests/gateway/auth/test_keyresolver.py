from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import accounts, keys
from gateway.auth.keyresolver import KeyPrincipal, KeyResolver
from gateway.db.models import ApiKey, User
from gateway.fields import as_utc
from gateway.registry import Registry
from tests.support.control_plane import cheap_passwords

SECRET = "app-secret-" + "z" * 40


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class CountingSessions:
    """A sessionmaker stand-in that counts how many sessions (database round trips) were opened."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.opened = 0

    def __call__(self) -> AsyncSession:
        self.opened += 1
        return self.sessions()


async def _user_with_key(sessions: async_sessionmaker[AsyncSession], registry: Registry,
                         **values: Any) -> tuple[str, ApiKey]:
    async with sessions() as session:
        member = await accounts.create_user(session, registry, cheap_passwords(),
                                            email=f"{uuid.uuid4().hex[:8]}@example.com", password="long-enough")
        raw, key = await keys.create_key(session, member=member, secret=SECRET, values={"name": "k", **values})
        await session.commit()
    return raw, key


async def _set(sessions: async_sessionmaker[AsyncSession], model: Any, row_id: str, **values: Any) -> None:
    async with sessions() as session:
        await session.execute(sa.update(model).where(model.id == row_id).values(**values))
        await session.commit()


async def test_resolves_a_key_to_its_principal(sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    raw, key = await _user_with_key(sessions, registry, allowed_models=["privaterouter/fast"],
                                    monthly_limit_pico=5 * 10**12, rpm=7, expires_at=expires)
    principal = await KeyResolver(sessions, SECRET).resolve(raw)
    assert principal is not None
    assert principal == KeyPrincipal(key_id=key.id, user_id=key.user_id, account_id=key.account_id,
                                     plan_name="free", allowed_models=("privaterouter/fast",),
                                     monthly_limit_pico=5 * 10**12, rpm=7, expires_at=principal.expires_at)
    assert principal.expires_at is not None and abs(principal.expires_at - expires) < timedelta(seconds=1)
    assert principal.expires_at.tzinfo is not None


async def test_malformed_and_unknown_keys_are_none(sessions: async_sessionmaker[AsyncSession]) -> None:
    counting = CountingSessions(sessions)
    resolver = KeyResolver(counting, SECRET)  # type: ignore[arg-type]
    assert await resolver.resolve("sk-pr-live-short") is None
    assert await resolver.resolve("not a key at all") is None
    assert counting.opened == 0  # malformed keys never reach the database
    assert await resolver.resolve("sk-pr-live-" + "A" * 40) is None
    assert counting.opened == 1


async def test_wrong_secret_resolves_nothing(sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    raw, _ = await _user_with_key(sessions, registry)
    assert await KeyResolver(sessions, "another-secret-" + "q" * 40).resolve(raw) is None


async def test_answers_are_cached_for_ttl_then_reread(sessions: async_sessionmaker[AsyncSession],
                                                      registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    clock, counting = Clock(), CountingSessions(sessions)
    resolver = KeyResolver(counting, SECRET, ttl=1.0, clock=clock)  # type: ignore[arg-type]
    assert await resolver.resolve(raw) is not None
    await _set(sessions, ApiKey, key.id, status="disabled")
    clock.now += 0.9
    assert await resolver.resolve(raw) is not None  # still cached: at most `ttl` of staleness
    assert counting.opened == 1
    clock.now += 0.2
    assert await resolver.resolve(raw) is None
    assert counting.opened == 2


async def test_concurrent_misses_share_one_read(sessions: async_sessionmaker[AsyncSession],
                                                registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    clock, counting = Clock(), CountingSessions(sessions)
    resolver = KeyResolver(counting, SECRET, ttl=1.0, clock=clock)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(resolver.resolve(raw) for _ in range(20)))
    assert {answer.key_id if answer else None for answer in answers} == {key.id}
    assert counting.opened == 1  # every request in flight when the entry expires waits for the same read
    clock.now += 1.1
    await asyncio.gather(*(resolver.resolve(raw) for _ in range(20)))
    assert counting.opened == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_read(sessions: async_sessionmaker[AsyncSession],
                                                                  registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    resolver = KeyResolver(sessions, SECRET)
    first = asyncio.create_task(resolver.resolve(raw))
    second = asyncio.create_task(resolver.resolve(raw))
    await asyncio.sleep(0)
    first.cancel()
    principal = await second
    assert principal is not None and principal.key_id == key.id


async def test_a_change_during_a_read_is_not_hidden_by_it(sessions: async_sessionmaker[AsyncSession],
                                                          registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    counting = CountingSessions(sessions)
    resolver = KeyResolver(counting, SECRET)  # type: ignore[arg-type]
    before = asyncio.create_task(resolver.resolve(raw))
    await asyncio.sleep(0)
    await _set(sessions, ApiKey, key.id, status="disabled")
    resolver.forget_key(key.id)  # what disabling a key does in this replica
    assert await resolver.resolve(raw) is None  # a fresh read, not the one begun before the change
    await before
    assert counting.opened == 2


async def test_negative_answers_are_cached_too(sessions: async_sessionmaker[AsyncSession],
                                               registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry, status="disabled")
    clock, counting = Clock(), CountingSessions(sessions)
    resolver = KeyResolver(counting, SECRET, ttl=1.0, clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert await resolver.resolve(raw) is None
    assert counting.opened == 1
    await _set(sessions, ApiKey, key.id, status="active")
    clock.now += 1.01
    assert await resolver.resolve(raw) is not None


async def test_revocations_take_effect_within_a_second(sessions: async_sessionmaker[AsyncSession],
                                                       registry: Registry) -> None:
    created = [await _user_with_key(sessions, registry) for _ in range(4)]
    resolver = KeyResolver(sessions, SECRET)  # real clock, default ttl
    for raw, _ in created:
        assert await resolver.resolve(raw) is not None
    (_, disabled), (_, deleted), (_, owner_disabled), (_, expired) = created
    await _set(sessions, ApiKey, disabled.id, status="disabled")
    await _set(sessions, ApiKey, deleted.id, status="deleted")
    await _set(sessions, User, owner_disabled.user_id, status="disabled")
    await _set(sessions, ApiKey, expired.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    started = time.monotonic()
    for raw, _ in created:
        while await resolver.resolve(raw) is not None:
            assert time.monotonic() - started < 1.05, "still resolving after more than a second"
            await asyncio.sleep(0.05)


async def test_a_cached_key_stops_resolving_when_it_expires(sessions: async_sessionmaker[AsyncSession],
                                                            registry: Registry) -> None:
    raw, _ = await _user_with_key(sessions, registry, expires_at=datetime.now(UTC) + timedelta(seconds=0.3))
    resolver = KeyResolver(sessions, SECRET, ttl=60)
    assert await resolver.resolve(raw) is not None
    await asyncio.sleep(0.35)
    assert await resolver.resolve(raw) is None


async def test_forget_drops_cached_answers(sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    resolver = KeyResolver(sessions, SECRET, ttl=60)
    assert await resolver.resolve(raw) is not None
    await _set(sessions, ApiKey, key.id, status="disabled")
    resolver.forget_key(key.id)
    assert await resolver.resolve(raw) is None
    await _set(sessions, ApiKey, key.id, status="active")
    resolver.forget_key(key.id)  # a negative answer for an existing key is dropped too
    assert await resolver.resolve(raw) is not None
    await _set(sessions, User, key.user_id, status="disabled")
    resolver.forget_user(key.user_id)
    assert await resolver.resolve(raw) is None
    await _set(sessions, User, key.user_id, status="active")
    resolver.forget_user(key.user_id)
    assert await resolver.resolve(raw) is not None


async def test_cache_is_bounded(sessions: async_sessionmaker[AsyncSession]) -> None:
    resolver = KeyResolver(sessions, SECRET, max_entries=3)
    for number in range(6):
        await resolver.resolve(f"sk-pr-live-{number:040d}")
    assert len(resolver._cache) == 3


async def test_touch_is_written_by_flush_only(sessions: async_sessionmaker[AsyncSession],
                                              registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    resolver = KeyResolver(sessions, SECRET)
    resolver.touch(key.id)
    pending = resolver.pending_last_used(key.id)
    assert pending is not None
    async with sessions() as session:
        assert (await session.get(ApiKey, key.id)).last_used_at is None  # type: ignore[union-attr]
    await resolver.flush_last_used()
    assert resolver.pending_last_used(key.id) is None
    async with sessions() as session:
        stored = (await session.get(ApiKey, key.id)).last_used_at  # type: ignore[union-attr]
    assert stored is not None and abs(as_utc(stored) - pending) < timedelta(milliseconds=1)
    await resolver.flush_last_used()  # nothing to do


async def test_flush_never_moves_last_used_backwards(sessions: async_sessionmaker[AsyncSession],
                                                     registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    future = datetime.now(UTC) + timedelta(hours=1)
    await _set(sessions, ApiKey, key.id, last_used_at=future)
    resolver = KeyResolver(sessions, SECRET)
    resolver.touch(key.id)
    await resolver.flush_last_used()
    async with sessions() as session:
        stored = (await session.get(ApiKey, key.id)).last_used_at  # type: ignore[union-attr]
    assert stored is not None and abs(as_utc(stored) - future) < timedelta(milliseconds=1)


async def test_failed_flush_keeps_the_uses() -> None:
    def broken() -> AsyncSession:
        raise ConnectionError("database down")

    resolver = KeyResolver(broken, SECRET)  # type: ignore[arg-type]
    resolver.touch("key-1")
    with pytest.raises(ConnectionError):
        await resolver.flush_last_used()
    assert resolver.pending_last_used("key-1") is not None


async def test_a_failed_shared_read_fails_every_waiter_and_the_next_one_retries(
        sessions: async_sessionmaker[AsyncSession], registry: Registry) -> None:
    raw, key = await _user_with_key(sessions, registry)
    broken = {"on": True}

    def flaky() -> AsyncSession:
        if broken["on"]:
            raise ConnectionError("database is down")
        return sessions()

    resolver = KeyResolver(flaky, SECRET)  # type: ignore[arg-type]
    results = await asyncio.gather(*(resolver.resolve(raw) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    broken["on"] = False
    principal = await resolver.resolve(raw)
    assert principal is not None and principal.key_id == key.id
