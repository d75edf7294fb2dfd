"""Set-based settlement of a batch: exact money, ledger order, idempotency, caps (both backends)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.holds import FLOOR_PICO, Quote, place_hold
from gateway.billing.settlement import Settlement, settle_batch
from gateway.db.models import Account, ApiKey, CreditTransaction, UsageEvent, utcnow
from tests.support.accounts import ledger_sum, make_account

USD = 10**12


def _item(request_id: str, user: str, account: str, key: str, cost: int) -> Settlement:
    return Settlement(request_id=request_id, account_id=account, user_id=user, api_key_id=key,
                      model_public_name="privaterouter/fast", ollama_tag="gemma4:latest", node="n",
                      endpoint="chat.completions", input_tokens=3, output_tokens=4, tokens_estimated=False,
                      cost_pico=cost, latency_ms=1, ttft_ms=1, status="success", error_code=None,
                      registry_version="v", created_at=utcnow())


async def _hold(sessions: async_sessionmaker[AsyncSession], request_id: str, account: str, key: str,
                amount: int, key_limited: bool = False) -> None:
    async with sessions() as session:
        await place_hold(session, request_id=request_id, account_id=account, key_id=key, key_has_limit=key_limited,
                         quote=Quote(amount, 0, 0))


async def test_a_batch_across_accounts_settles_each_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    alice = await make_account(sessions, credits_pico=USD, key_limit_pico=USD)
    bob = await make_account(sessions, credits_pico=USD)
    items = []
    for index, (user, account, key) in enumerate([alice, bob, alice, bob, alice]):
        await _hold(sessions, f"r{index}", account, key, FLOOR_PICO, key_limited=account == alice[1])
        items.append(_item(f"r{index}", user, account, key, cost=(index + 1) * 1000))
    batch = [*items, items[0]]  # a repeat inside the batch
    async with sessions() as session:
        charges = await settle_batch(session, batch)
        await session.commit()
    assert charges == [1000, 2000, 3000, 4000, 5000, None]
    async with sessions() as session:
        assert await settle_batch(session, items) == [None] * 5  # already settled
        await session.commit()
        for _, account, _ in (alice, bob):
            row = await session.get(Account, account)
            assert row is not None and row.held_pico == 0
            assert row.balance_pico == await ledger_sum(session, account)
            ledger = (await session.execute(sa.select(CreditTransaction).where(CreditTransaction.account_id == account)
                                            .order_by(CreditTransaction.id))).scalars().all()
            running = 0
            for entry in ledger:  # every row's balance_after is the running sum in id order
                running += entry.amount_pico
                assert entry.balance_after_pico == running
        key_row = await session.get(ApiKey, alice[2])
        assert key_row is not None and (key_row.spend_pico, key_row.held_pico) == (1000 + 3000 + 5000, 0)
        events = (await session.execute(sa.select(UsageEvent))).scalars().all()
        assert sorted(event.request_id for event in events) == [f"r{index}" for index in range(5)]


async def test_a_cost_above_the_hold_charges_the_hold_and_records_the_rest(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=4 * FLOOR_PICO)
    await _hold(sessions, "big", account, key, FLOOR_PICO)
    await _hold(sessions, "other", account, key, FLOOR_PICO // 2)  # stays open: its credits are not free
    async with sessions() as session:
        [charge] = await settle_batch(session, [_item("big", user, account, key, cost=5 * FLOOR_PICO)])
        await session.commit()
    assert charge == FLOOR_PICO  # the free balance could pay more; the hold is the most a request costs
    async with sessions() as session:
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (3 * FLOOR_PICO, FLOOR_PICO // 2)
        assert row.balance_pico == await ledger_sum(session, account)
        event = (await session.execute(sa.select(UsageEvent))).scalar_one()
        assert (event.cost_pico, event.cost_capped_pico) == (FLOOR_PICO, 4 * FLOOR_PICO)


async def test_a_key_monthly_limit_is_never_exceeded_by_a_cost_above_the_hold(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=10**10)  # $0.01
    async with sessions() as session:
        placed = await place_hold(session, request_id="r", account_id=account, key_id=key, key_has_limit=True,
                                  quote=Quote(10**9, 10**7, 8000))  # worst case $0.081 > the key's $0.01
    assert placed.amount_pico == 10**10
    async with sessions() as session:
        [charge] = await settle_batch(session, [_item("r", user, account, key, cost=3 * 10**10 + 2 * 10**7)])
        await session.commit()
        key_row = await session.get(ApiKey, key)
        assert key_row is not None and (key_row.spend_pico, key_row.held_pico) == (10**10, 0)
        event = (await session.execute(sa.select(UsageEvent))).scalar_one()
        assert charge == 10**10 and event.cost_capped_pico == 2 * 10**10 + 2 * 10**7


async def test_errors_release_without_a_ledger_row(sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD)
    await _hold(sessions, "failed", account, key, FLOOR_PICO)
    failed = dataclasses.replace(_item("failed", user, account, key, cost=0), status="error", error_code="upstream")
    async with sessions() as session:
        assert await settle_batch(session, [failed]) == [0]
        await session.commit()
        rows = (await session.execute(sa.select(CreditTransaction).where(CreditTransaction.kind == "usage"))).all()
        assert rows == []
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (USD, 0)
