"""The usage writer: batched, retried on database failure, flushed on close, never dropping an item."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.holds import Quote, place_hold
from gateway.billing.settlement import Settlement
from gateway.db.engine import sessions_writer
from gateway.db.models import UsageEvent, utcnow
from gateway.usage import UsageWriter
from tests.support.accounts import make_account


async def _admitted(sessions: async_sessionmaker[AsyncSession], count: int) -> list[Settlement]:
    user, account, key = await make_account(sessions, credits_pico=10**12)
    items = []
    for index in range(count):
        async with sessions() as session:
            await place_hold(session, request_id=f"req-{index}", account_id=account, key_id=key, key_has_limit=False,
                             quote=Quote(10**9, 0, 0))
        items.append(Settlement(request_id=f"req-{index}", account_id=account, user_id=user, api_key_id=key,
                                model_public_name="m", ollama_tag="t", node=None, endpoint="embeddings",
                                input_tokens=1, output_tokens=0, tokens_estimated=False, cost_pico=100, latency_ms=1,
                                ttft_ms=None, status="success", error_code=None, registry_version="v",
                                created_at=utcnow()))
    return items


async def _event_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int((await session.execute(sa.select(sa.func.count()).select_from(UsageEvent))).scalar_one())


async def test_close_flushes_everything_in_batches(sessions: async_sessionmaker[AsyncSession]) -> None:
    written: list[int] = []
    writer = UsageWriter(sessions, batch_size=3, interval=10.0,
                         on_written=lambda batch, charges: written.append(len(batch)))
    writer.start()
    for item in await _admitted(sessions, 7):
        writer.submit(item)
    await writer.aclose()
    assert await _event_count(sessions) == 7 and writer.depth == 0
    assert sum(written) == 7 and max(written) <= 3


async def test_database_failure_is_retried_without_loss(sessions: async_sessionmaker[AsyncSession]) -> None:
    failures: list[Exception] = []
    broken = {"on": True}

    def flaky() -> AsyncSession:
        if broken["on"]:
            raise ConnectionError("database is down")
        return sessions()

    writer = UsageWriter(flaky, interval=0.01, on_failure=failures.append)  # type: ignore[arg-type]
    writer.start()
    for item in await _admitted(sessions, 2):
        writer.submit(item)
    writer._wakeup.set()
    while not failures:
        await asyncio.sleep(0.01)
    assert writer.depth == 2
    broken["on"] = False
    while writer.depth:
        await asyncio.sleep(0.01)
    await writer.aclose()
    assert await _event_count(sessions) == 2


async def test_submitting_twice_settles_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    writer = UsageWriter(sessions)
    [item] = await _admitted(sessions, 1)
    writer.submit(item)
    writer.submit(item)
    await writer.flush()
    assert await _event_count(sessions) == 1


async def test_a_poisoned_item_is_set_aside_not_blocking_the_queue(sessions: async_sessionmaker[AsyncSession],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    first, second, third = await _admitted(sessions, 3)
    poisoned = dataclasses.replace(second, account_id="no-such-account")  # its settlement can never commit
    writer = UsageWriter(sessions, interval=0.01)
    writer.start()
    for item in [first, poisoned, third]:
        writer.submit(item)
    writer._wakeup.set()
    with caplog.at_level(logging.CRITICAL, logger="pr.usage"):
        while writer.depth:
            await asyncio.sleep(0.01)
    await writer.aclose()
    assert await _event_count(sessions) == 2
    assert writer.rejected == [poisoned] and "no-such-account" in caplog.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_batches_commit_durably_through_the_writer(sessions: async_sessionmaker[AsyncSession],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite = sessions_writer(sessions)
    assert sqlite is not None
    durable: list[bool] = []
    run = sqlite.run

    async def recording(job, **kwargs):  # type: ignore[no-untyped-def]
        durable.append(kwargs.get("durable", False))
        return await run(job, **kwargs)

    monkeypatch.setattr(sqlite, "run", recording)
    writer = UsageWriter(sessions, batch_size=5, interval=10.0)
    for item in await _admitted(sessions, 7):
        writer.submit(item)
    await writer.flush()
    # each batch committed durably (the journal marks it done next), before the usage events are counted
    assert durable == [True, True] and await _event_count(sessions) == 7
