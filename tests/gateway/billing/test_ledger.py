"""The ledger invariant: after any sequence of postings, sequential or concurrent, the ledger sums to
the balance, every row's balance_after is the running sum, and no update is lost."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.billing import ledger
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, CreditTransaction
from tests.support.accounts import make_account

USD = 10**12
amounts = st.integers(min_value=1, max_value=50 * USD)
postings = st.one_of(
    st.tuples(st.just("grant"), amounts),
    st.tuples(st.just("topup"), st.sampled_from([10, 25, 50, 100, 500]).map(lambda usd: usd * USD)),
    st.tuples(st.just("usage"), amounts.map(lambda pico: -pico)),
    st.tuples(st.just("refund"), amounts),
    st.tuples(st.just("admin_adjust"), st.integers(min_value=-50 * USD, max_value=50 * USD).filter(bool)),
)


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url, pool_size=8)
    yield session_factory(engine)
    await engine.dispose()


async def _post(sessions: async_sessionmaker[AsyncSession], account_id: str, kind: ledger.Kind, amount: int) -> bool:
    """One posting in its own transaction; False when a debit was refused for lack of funds."""
    async with sessions() as session:
        try:
            await ledger.post(session, account_id=account_id, kind=kind, amount_pico=amount)
        except ledger.InsufficientBalance:
            return False
        await session.commit()
        return True


async def _check_invariant(sessions: async_sessionmaker[AsyncSession], account_id: str, expected: int) -> None:
    async with sessions() as session:
        account = await session.get(Account, account_id)
        rows = (await session.execute(
            sa.select(col(CreditTransaction.amount_pico), col(CreditTransaction.balance_after_pico))
            .where(col(CreditTransaction.account_id) == account_id).order_by(col(CreditTransaction.id))
        )).all()
    assert account is not None
    assert account.balance_pico == expected >= 0
    assert sum(amount for amount, _ in rows) == account.balance_pico
    running = 0
    for amount, balance_after in rows:
        running += amount
        assert balance_after == running >= 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(postings, min_size=1, max_size=25))
async def test_any_sequence_keeps_ledger_equal_to_balance(sessions: async_sessionmaker[AsyncSession],
                                                          sequence: list[tuple[ledger.Kind, int]]) -> None:
    _, account_id, _ = await make_account(sessions, credits_pico=0)
    expected = 0
    for kind, amount in sequence:
        accepted = await _post(sessions, account_id, kind, amount)
        assert accepted == (expected + amount >= 0)
        if accepted:
            expected += amount
    await _check_invariant(sessions, account_id, expected)


async def test_concurrent_postings_lose_no_update(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account_id, _ = await make_account(sessions, credits_pico=5 * USD)
    rng = random.Random(4)
    plan: list[tuple[ledger.Kind, int]] = []
    for _ in range(60):
        kind: ledger.Kind = rng.choice(["topup", "usage", "usage", "admin_adjust", "refund", "grant"])
        amount = rng.randint(1, 3 * USD)
        plan.append((kind, -amount if kind == "usage" or (kind == "admin_adjust" and rng.random() < 0.5) else amount))
    gate = asyncio.Semaphore(8)

    async def run(kind: ledger.Kind, amount: int) -> int:
        async with gate:
            return amount if await _post(sessions, account_id, kind, amount) else 0

    applied = await asyncio.gather(*(run(kind, amount) for kind, amount in plan))
    assert any(amount < 0 for amount in applied) and any(amount > 0 for amount in applied)
    await _check_invariant(sessions, account_id, 5 * USD + sum(applied))


async def test_concurrent_debits_never_overdraw(sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account_id, _ = await make_account(sessions, credits_pico=10 * USD)
    results = await asyncio.gather(*(_post(sessions, account_id, "usage", -3 * USD) for _ in range(8)))
    assert results.count(True) == 3
    await _check_invariant(sessions, account_id, USD)
