"""Holds and settlement against a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.holds import (
    FLOOR_PICO,
    HoldOrigin,
    HoldRefused,
    Quote,
    place_hold,
    place_hold_sqlite,
    place_worst_case_hold,
    release_stale_holds,
)
from gateway.billing.settlement import Settlement, settle, settle_batch
from gateway.billing.settlement_pg import settle_batch_pg
from gateway.db.engine import bound_engine, create_engine, session_factory, sessions_writer
from gateway.db.models import Account, ApiKey, Hold, UsageEvent, utcnow
from gateway.db.sqlite_writer import SqliteWriter
from tests.support.accounts import ledger_sum, make_account

USD = 10**12


def _settlement(request_id: str, user: str, account: str, key: str, cost: int, status: str = "success") -> Settlement:
    return Settlement(request_id=request_id, account_id=account, user_id=user, api_key_id=key,
                      model_public_name="privaterouter/fast", ollama_tag="gemma4:latest", node="local",
                      endpoint="chat.completions", input_tokens=10, output_tokens=5, tokens_estimated=False,
                      cost_pico=cost, latency_ms=3, ttft_ms=1, status=status, error_code=None,
                      registry_version="v", created_at=utcnow())


async def _account(sessions: async_sessionmaker[AsyncSession], account_id: str) -> Account:
    async with sessions() as session:
        account = await session.get(Account, account_id)
        assert account is not None
        return account


async def test_hold_then_settle_moves_exact_money_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD)
    quote = Quote(prompt_pico=1000, output_pico_per_token=300_000, max_output_tokens=100)
    async with sessions() as session:
        hold = await place_hold(session, request_id="r1", account_id=account, key_id=key, key_has_limit=False,
                                quote=quote)
    assert hold.amount_pico == quote.worst_case and hold.output_tokens == 100
    assert (await _account(sessions, account)).held_pico == quote.worst_case

    for _ in range(2):  # the second settle is a no-op: idempotent by request id
        async with sessions() as session:
            await settle(session, _settlement("r1", user, account, key, cost=4_100_000))
            await session.commit()
    after = await _account(sessions, account)
    assert (after.balance_pico, after.held_pico) == (USD - 4_100_000, 0)
    async with sessions() as session:
        assert await ledger_sum(session, account) == after.balance_pico
        events = (await session.execute(sa.select(UsageEvent))).scalars().all()
        assert [(e.request_id, e.cost_pico) for e in events] == [("r1", 4_100_000)]
        assert await session.get(Hold, "r1") is None


async def test_low_balance_caps_output_and_floor_refuses(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, key = await make_account(sessions, credits_pico=2 * FLOOR_PICO)
    quote = Quote(prompt_pico=FLOOR_PICO // 2, output_pico_per_token=FLOOR_PICO // 10, max_output_tokens=1000)
    async with sessions() as session:
        hold = await place_hold(session, request_id="r1", account_id=account, key_id=key, key_has_limit=False,
                                quote=quote)
    assert hold.amount_pico == 2 * FLOOR_PICO and hold.output_tokens == 15
    async with sessions() as session:
        with pytest.raises(HoldRefused, match="too low"):
            await place_hold(session, request_id="r2", account_id=account, key_id=key, key_has_limit=False,
                             quote=quote)


async def test_key_monthly_limit_is_enforced(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=5 * FLOOR_PICO)
    quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=FLOOR_PICO, max_output_tokens=100)
    async with sessions() as session:
        hold = await place_hold(session, request_id="r1", account_id=account, key_id=key, key_has_limit=True,
                                quote=quote)
    assert hold.amount_pico == 5 * FLOOR_PICO and hold.key_held
    async with sessions() as session:
        with pytest.raises(HoldRefused, match="monthly spending limit"):
            await place_hold(session, request_id="r2", account_id=account, key_id=key, key_has_limit=True,
                             quote=quote)
    async with sessions() as session:
        await settle(session, _settlement("r1", user, account, key, cost=3 * FLOOR_PICO))
        await session.commit()
        key_row = await session.get(ApiKey, key)
        assert key_row is not None and (key_row.held_pico, key_row.spend_pico) == (0, 3 * FLOOR_PICO)


async def test_concurrent_holds_never_overdraw(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=10 * FLOOR_PICO)
    quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=0, max_output_tokens=0)

    async def attempt(index: int) -> bool:
        async with sessions() as session:
            try:
                await place_hold(session, request_id=f"r{index}", account_id=account, key_id=key,
                                 key_has_limit=False, quote=quote)
            except HoldRefused:
                return False
            return True

    results = await asyncio.gather(*(attempt(i) for i in range(40)))
    assert sum(results) == 10
    async with sessions() as session:
        for index, admitted in enumerate(results):
            if admitted:
                await settle(session, _settlement(f"r{index}", user, account, key, cost=FLOOR_PICO))
        await session.commit()
        after = await session.get(Account, account)
        assert after is not None and (after.balance_pico, after.held_pico) == (0, 0)
        assert await ledger_sum(session, account) == 0


async def test_error_settlement_releases_without_charge(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD)
    async with sessions() as session:
        await place_hold(session, request_id="r1", account_id=account, key_id=key, key_has_limit=False,
                         quote=Quote(FLOOR_PICO, 1, 10))
    async with sessions() as session:
        await settle(session, _settlement("r1", user, account, key, cost=0, status="error"))
        await session.commit()
    after = await _account(sessions, account)
    assert (after.balance_pico, after.held_pico) == (USD, 0)


async def test_stale_holds_are_released(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, key = await make_account(sessions, credits_pico=USD)
    async with sessions() as session:
        await place_hold(session, request_id="r1", account_id=account, key_id=key, key_has_limit=False,
                         quote=Quote(FLOOR_PICO, 1, 10))
    async with sessions() as session:
        assert await release_stale_holds(session, older_than=timedelta(hours=1)) == 0
        assert await release_stale_holds(session, older_than=timedelta(seconds=-1)) == 1
    assert (await _account(sessions, account)).held_pico == 0


async def test_single_statement_hold_on_postgres(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    try:
        _, account, _ = await make_account(sessions, credits_pico=3 * FLOOR_PICO)
        quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=0, max_output_tokens=0)
        placed = [await place_worst_case_hold(engine, request_id=f"r{i}", account_id=account, quote=quote)
                  for i in range(4)]
        assert [hold is not None for hold in placed] == [True, True, True, False]
        assert (await _account(sessions, account)).held_pico == 3 * FLOOR_PICO
        async with sessions() as session:
            assert len((await session.execute(sa.select(Hold))).all()) == 3
    finally:
        await engine.dispose()


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _writer(sessions: async_sessionmaker[AsyncSession]) -> SqliteWriter:
    writer = sessions_writer(sessions)
    assert writer is not None, "SQLite only: PostgreSQL holds go through place_worst_case_hold / place_hold"
    return writer


@SQLITE_ONLY
async def test_sqlite_hold_records_the_worst_case_as_place_hold_does(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, key = await make_account(sessions, credits_pico=USD)
    quote = Quote(prompt_pico=1000, output_pico_per_token=300_000, max_output_tokens=100)
    origin = HoldOrigin(owner="instance-1", key_id=key, model_public_name="privaterouter/fast",
                        endpoint="chat.completions")
    hold = await place_hold_sqlite(_writer(sessions), request_id="r1", account_id=account, key_id=key,
                                   key_has_limit=False, quote=quote, origin=origin)
    assert (hold.amount_pico, hold.output_tokens, hold.key_held) == (quote.worst_case, 100, False)
    async with sessions() as session:
        row = await session.get(Hold, "r1")
        assert row is not None
        assert (row.account_id, row.api_key_id, row.amount_pico, row.owner, row.key_id, row.model_public_name,
                row.endpoint) == (account, None, quote.worst_case, "instance-1", key, "privaterouter/fast",
                                  "chat.completions")
        assert abs((row.created_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds()) < 60
    assert (await _account(sessions, account)).held_pico == quote.worst_case
    async with sessions() as session:  # and the stale-hold sweep reads its timestamp like any other
        assert await release_stale_holds(session, older_than=timedelta(hours=1)) == 0


@SQLITE_ONLY
async def test_sqlite_hold_holds_what_is_free_or_refuses(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, key = await make_account(sessions, credits_pico=2 * FLOOR_PICO)
    writer = _writer(sessions)
    quote = Quote(prompt_pico=FLOOR_PICO // 2, output_pico_per_token=FLOOR_PICO // 10, max_output_tokens=1000)
    hold = await place_hold_sqlite(writer, request_id="r1", account_id=account, key_id=key, key_has_limit=False,
                                   quote=quote)
    assert hold.amount_pico == 2 * FLOOR_PICO and hold.output_tokens == 15
    with pytest.raises(HoldRefused, match="too low"):
        await place_hold_sqlite(writer, request_id="r2", account_id=account, key_id=key, key_has_limit=False,
                                quote=quote)
    async with sessions() as session:
        assert await session.get(Hold, "r2") is None


@SQLITE_ONLY
async def test_sqlite_hold_enforces_the_key_monthly_limit(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=5 * FLOOR_PICO)
    writer = _writer(sessions)
    quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=FLOOR_PICO, max_output_tokens=100)
    hold = await place_hold_sqlite(writer, request_id="r1", account_id=account, key_id=key, key_has_limit=True,
                                   quote=quote)
    assert hold.amount_pico == 5 * FLOOR_PICO and hold.key_held
    with pytest.raises(HoldRefused, match="monthly spending limit"):
        await place_hold_sqlite(writer, request_id="r2", account_id=account, key_id=key, key_has_limit=True,
                                quote=quote)


@SQLITE_ONLY
async def test_sqlite_concurrent_holds_and_settlements_keep_the_ledger(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=10 * FLOOR_PICO)
    writer = _writer(sessions)
    quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=0, max_output_tokens=0)

    async def attempt(index: int) -> bool:
        try:
            await place_hold_sqlite(writer, request_id=f"r{index}", account_id=account, key_id=key,
                                    key_has_limit=False, quote=quote)
        except HoldRefused:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(40)))
    assert sum(results) == 10
    admitted = [_settlement(f"r{index}", user, account, key, cost=FLOOR_PICO)
                for index, ok in enumerate(results) if ok]
    await asyncio.gather(*(writer.run(lambda session, item=item: settle_batch(session, [item]))  # type: ignore[misc]
                           for item in admitted))
    async with sessions() as session:
        after = await session.get(Account, account)
        assert after is not None and (after.balance_pico, after.held_pico) == (0, 0)
        assert await ledger_sum(session, account) == 0


async def test_single_statement_hold_reserves_a_key_monthly_limit_too(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    try:
        user, account, key = await make_account(sessions, credits_pico=10 * FLOOR_PICO, key_limit_pico=2 * FLOOR_PICO)
        quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=0, max_output_tokens=0)
        placed = [await place_worst_case_hold(engine, request_id=f"r{i}", account_id=account, quote=quote,
                                              limited_key_id=key) for i in range(3)]
        assert [hold is not None and hold.key_held for hold in placed] == [True, True, False]
        # the third fit the account but not the key: nothing of it stays held anywhere
        assert (await _account(sessions, account)).held_pico == 2 * FLOOR_PICO
        async with sessions() as session:
            key_row = await session.get(ApiKey, key)
            assert key_row is not None and (key_row.held_pico, key_row.spend_month) == (2 * FLOOR_PICO,
                                                                                         utcnow().strftime("%Y-%m"))
            assert {row.api_key_id for row in (await session.execute(sa.select(Hold))).scalars()} == {key}
            assert await settle(session, _settlement("r0", user, account, key, cost=FLOOR_PICO // 2)) == FLOOR_PICO // 2
            await session.commit()
            key_row = await session.get(ApiKey, key, populate_existing=True)
            assert key_row is not None and (key_row.held_pico, key_row.spend_pico) == (FLOOR_PICO, FLOOR_PICO // 2)
        assert await place_worst_case_hold(engine, request_id="r3", account_id=account, quote=quote,
                                           limited_key_id=key) is None  # half a floor is left under the limit
        async with sessions() as session:
            with pytest.raises(HoldRefused, match="monthly spending limit"):  # the fallback refuses it too
                await place_hold(session, request_id="r3", account_id=account, key_id=key, key_has_limit=True,
                                 quote=quote)
    finally:
        await engine.dispose()


async def test_a_storm_of_holds_and_settlements_with_cancellations_keeps_the_ledger(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    # The hot path as inference._hold and the usage writer run it, with requests cancelled at random points
    # (mid-statement included): whatever was committed stays consistent, and settling what is held ends at 0.
    user, account, key = await make_account(sessions, credits_pico=40 * FLOOR_PICO, key_limit_pico=30 * FLOOR_PICO)
    writer = sessions_writer(sessions)
    engine = bound_engine(sessions)
    assert engine is not None
    quote = Quote(prompt_pico=FLOOR_PICO, output_pico_per_token=0, max_output_tokens=0)
    rng = random.Random(16)

    async def hold(request_id: str, limited: bool) -> None:
        if writer is not None:
            await place_hold_sqlite(writer, request_id=request_id, account_id=account, key_id=key,
                                    key_has_limit=limited, quote=quote)
            return
        if await place_worst_case_hold(engine, request_id=request_id, account_id=account, quote=quote,
                                       limited_key_id=key if limited else None) is None:
            async with sessions() as session:
                await place_hold(session, request_id=request_id, account_id=account, key_id=key,
                                 key_has_limit=limited, quote=quote)

    async def settle_items(items: list[Settlement]) -> None:
        if writer is not None:
            await writer.run(lambda session: settle_batch(session, items))
        else:
            await settle_batch_pg(engine, items)

    async def request(index: int) -> None:
        request_id = f"s{index}"
        try:
            await hold(request_id, limited=index % 2 == 0)
        except HoldRefused:
            return
        await asyncio.sleep(rng.random() / 1000)
        await settle_items([_settlement(request_id, user, account, key, cost=rng.randrange(FLOOR_PICO + 1))])

    tasks = [asyncio.create_task(request(i)) for i in range(120)]
    for _ in range(40):
        await asyncio.sleep(rng.random() / 500)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    async with sessions() as session:
        holds = (await session.execute(sa.select(Hold))).scalars().all()
        account_row = await session.get(Account, account)
        key_row = await session.get(ApiKey, key)
        assert account_row is not None and key_row is not None
        assert account_row.held_pico == sum(row.amount_pico for row in holds)
        assert key_row.held_pico == sum(row.amount_pico for row in holds if row.api_key_id == key)
    # Holds whose requests were cancelled after the commit are settled (as crash recovery would): nothing stays held.
    await settle_items([_settlement(row.request_id, user, account, key, cost=0) for row in holds])
    async with sessions() as session:
        after = await session.get(Account, account)
        key_after = await session.get(ApiKey, key)
        assert after is not None and key_after is not None and (after.held_pico, key_after.held_pico) == (0, 0)
        assert await ledger_sum(session, account) == after.balance_pico
        assert after.balance_pico >= 0
