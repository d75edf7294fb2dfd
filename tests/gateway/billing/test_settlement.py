"""Set-based settlement of a batch: exact money, ledger order, idempotency, caps (both backends; on
PostgreSQL both paths: through a session, and straight to asyncpg as the usage writer does)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.holds import FLOOR_PICO, Quote, place_hold
from gateway.billing.settlement import Settlement, settle_batch
from gateway.billing.settlement_pg import settle_batch_pg
from gateway.db.models import Account, ApiKey, CreditTransaction, UsageEvent, utcnow
from tests.support.accounts import ledger_sum, make_account

USD = 10**12
Settle = Callable[[async_sessionmaker[AsyncSession], list[Settlement]], Awaitable[list[int | None]]]


async def _through_a_session(sessions: async_sessionmaker[AsyncSession], items: list[Settlement]) -> list[int | None]:
    async with sessions() as session:
        charges = await settle_batch(session, items)
        await session.commit()
    return charges


async def _straight_to_asyncpg(sessions: async_sessionmaker[AsyncSession],
                               items: list[Settlement]) -> list[int | None]:
    return await settle_batch_pg(sessions.kw["bind"], items)


@pytest.fixture(params=["session", "asyncpg"])
def settle(request: pytest.FixtureRequest, database_url: str) -> Settle:
    """Settle and commit a batch by one of the two paths (asyncpg: PostgreSQL only)."""
    if request.param == "asyncpg":
        assert database_url.startswith("postgresql")  # never generated for SQLite (tests/conftest.py)
        return _straight_to_asyncpg
    return _through_a_session


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


async def test_a_batch_across_accounts_settles_each_once(sessions: async_sessionmaker[AsyncSession],
                                                        settle: Settle) -> None:
    alice = await make_account(sessions, credits_pico=USD, key_limit_pico=USD)
    bob = await make_account(sessions, credits_pico=USD)
    items = []
    for index, (user, account, key) in enumerate([alice, bob, alice, bob, alice]):
        await _hold(sessions, f"r{index}", account, key, FLOOR_PICO, key_limited=account == alice[1])
        items.append(_item(f"r{index}", user, account, key, cost=(index + 1) * 1000))
    batch = [*items, items[0]]  # a repeat inside the batch
    assert await settle(sessions, batch) == [1000, 2000, 3000, 4000, 5000, None]
    assert await settle(sessions, items) == [None] * 5  # already settled
    async with sessions() as session:
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


async def _events_of(sessions: async_sessionmaker[AsyncSession], request_id: str) -> list[UsageEvent]:
    async with sessions() as session:
        return list((await session.execute(sa.select(UsageEvent).where(UsageEvent.request_id == request_id)))
                    .scalars())


async def test_a_request_whose_hold_was_lost_is_settled_once(sessions: async_sessionmaker[AsyncSession],
                                                              settle: Settle) -> None:
    """No hold and no usage event: the hold was lost (SQLite's last writes on power loss), so the
    request was never settled; it is charged now, once, even when replayed again or repeated."""
    user, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=USD)
    await _hold(sessions, "kept", account, key, FLOOR_PICO, key_limited=True)
    lost = _item("lost", user, account, key, cost=7000)
    assert await settle(sessions, [lost, _item("kept", user, account, key, cost=2000), lost]) == [7000, 2000, None]
    assert await settle(sessions, [lost]) == [None]  # replayed again: its event exists now
    assert await settle(sessions, [lost]) == [None]
    [event] = await _events_of(sessions, "lost")
    assert (event.cost_pico, event.cost_capped_pico) == (7000, 0)
    async with sessions() as session:
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (USD - 9000, 0)
        assert row.balance_pico == await ledger_sum(session, account)
        key_row = await session.get(ApiKey, key)
        assert key_row is not None and (key_row.spend_pico, key_row.held_pico) == (9000, 0)


async def test_a_lost_hold_settled_twice_at_once_is_charged_once(sessions: async_sessionmaker[AsyncSession],
                                                                  settle: Settle) -> None:
    """Two settlements of the same hold-less request in flight together: the second waits for the
    first's lock on the account, then finds its event (no second charge, no duplicate-key error)."""
    user, account, key = await make_account(sessions, credits_pico=USD)
    lost = _item("twice", user, account, key, cost=7000)
    results = await asyncio.gather(settle(sessions, [lost]), settle(sessions, [lost]))
    assert sorted(results, key=str) == [[7000], [None]]
    assert len(await _events_of(sessions, "twice")) == 1
    async with sessions() as session:
        row = await session.get(Account, account)
        assert row is not None and row.balance_pico == USD - 7000 == await ledger_sum(session, account)


async def test_a_request_without_a_hold_but_with_its_event_is_skipped(sessions: async_sessionmaker[AsyncSession],
                                                                      settle: Settle) -> None:
    """Settled before (by its writer, or as interrupted by a dead owner's settlement): a replay of its
    journaled settlement changes nothing."""
    user, account, key = await make_account(sessions, credits_pico=USD)
    await _hold(sessions, "done", account, key, FLOOR_PICO)
    interrupted = dataclasses.replace(_item("done", user, account, key, cost=0), status="interrupted")
    assert await settle(sessions, [interrupted]) == [0]
    assert await settle(sessions, [_item("done", user, account, key, cost=5000)]) == [None]
    [event] = await _events_of(sessions, "done")
    assert (event.status, event.cost_pico) == ("interrupted", 0)
    async with sessions() as session:
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (USD, 0)


async def test_a_lost_hold_is_charged_within_the_free_balance(sessions: async_sessionmaker[AsyncSession],
                                                              settle: Settle) -> None:
    """With no hold to bound it, a request is charged at most the balance not held by others; the rest
    is recorded as capped and the ledger still sums to the balance."""
    user, account, key = await make_account(sessions, credits_pico=FLOOR_PICO)
    await _hold(sessions, "open", account, key, FLOOR_PICO // 4)  # stays open: its credits are not free
    [charge] = await settle(sessions, [_item("lost", user, account, key, cost=2 * FLOOR_PICO)])
    assert charge == FLOOR_PICO - FLOOR_PICO // 4
    [event] = await _events_of(sessions, "lost")
    assert (event.cost_pico, event.cost_capped_pico) == (charge, 2 * FLOOR_PICO - charge)
    assert await settle(sessions, [_item("broke", user, account, key, cost=10)]) == [0]  # nothing free: no ledger row
    async with sessions() as session:
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (FLOOR_PICO // 4, FLOOR_PICO // 4)
        assert row.balance_pico == await ledger_sum(session, account)
    [broke] = await _events_of(sessions, "broke")
    assert (broke.cost_pico, broke.cost_capped_pico) == (0, 10)


async def test_a_cost_above_the_hold_charges_the_hold_and_records_the_rest(
        sessions: async_sessionmaker[AsyncSession], settle: Settle) -> None:
    user, account, key = await make_account(sessions, credits_pico=4 * FLOOR_PICO)
    await _hold(sessions, "big", account, key, FLOOR_PICO)
    await _hold(sessions, "other", account, key, FLOOR_PICO // 2)  # stays open: its credits are not free
    [charge] = await settle(sessions, [_item("big", user, account, key, cost=5 * FLOOR_PICO)])
    assert charge == FLOOR_PICO  # the free balance could pay more; the hold is the most a request costs
    async with sessions() as session:
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (3 * FLOOR_PICO, FLOOR_PICO // 2)
        assert row.balance_pico == await ledger_sum(session, account)
        event = (await session.execute(sa.select(UsageEvent))).scalar_one()
        assert (event.cost_pico, event.cost_capped_pico) == (FLOOR_PICO, 4 * FLOOR_PICO)


async def test_a_key_monthly_limit_is_never_exceeded_by_a_cost_above_the_hold(
        sessions: async_sessionmaker[AsyncSession], settle: Settle) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=10**10)  # $0.01
    async with sessions() as session:
        placed = await place_hold(session, request_id="r", account_id=account, key_id=key, key_has_limit=True,
                                  quote=Quote(10**9, 10**7, 8000))  # worst case $0.081 > the key's $0.01
    assert placed.amount_pico == 10**10
    [charge] = await settle(sessions, [_item("r", user, account, key, cost=3 * 10**10 + 2 * 10**7)])
    async with sessions() as session:
        key_row = await session.get(ApiKey, key)
        assert key_row is not None and (key_row.spend_pico, key_row.held_pico) == (10**10, 0)
        event = (await session.execute(sa.select(UsageEvent))).scalar_one()
        assert charge == 10**10 and event.cost_capped_pico == 2 * 10**10 + 2 * 10**7


async def test_errors_release_without_a_ledger_row(sessions: async_sessionmaker[AsyncSession], settle: Settle) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD)
    await _hold(sessions, "failed", account, key, FLOOR_PICO)
    failed = dataclasses.replace(_item("failed", user, account, key, cost=0), status="error", error_code="upstream")
    assert await settle(sessions, [failed]) == [0]
    async with sessions() as session:
        rows = (await session.execute(sa.select(CreditTransaction).where(CreditTransaction.kind == "usage"))).all()
        assert rows == []
        row = await session.get(Account, account)
        assert row is not None and (row.balance_pico, row.held_pico) == (USD, 0)


async def test_a_key_settled_for_two_months_in_one_batch_ends_on_the_later(
        sessions: async_sessionmaker[AsyncSession], settle: Settle) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=USD)
    await _hold(sessions, "old", account, key, FLOOR_PICO, key_limited=True)
    await _hold(sessions, "new", account, key, FLOOR_PICO, key_limited=True)
    late = _item("old", user, account, key, cost=1000)
    late = dataclasses.replace(late, created_at=late.created_at.replace(year=late.created_at.year - 1))
    assert await settle(sessions, [late, _item("new", user, account, key, cost=2000)]) == [1000, 2000]
    async with sessions() as session:
        key_row = await session.get(ApiKey, key)
        assert key_row is not None
        assert (key_row.spend_month, key_row.spend_pico, key_row.held_pico) == (utcnow().strftime("%Y-%m"), 2000, 0)


async def test_a_batch_the_database_refuses_commits_nothing(sessions: async_sessionmaker[AsyncSession],
                                                           settle: Settle) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD)
    await _hold(sessions, "good", account, key, FLOOR_PICO)
    await _hold(sessions, "bad", account, key, FLOOR_PICO)
    poisoned = dataclasses.replace(_item("bad", user, account, key, cost=1), account_id="no-such-account")
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises; the point is the rollback
        await settle(sessions, [_item("good", user, account, key, cost=1), poisoned])
    async with sessions() as session:
        row = await session.get(Account, account, populate_existing=True)
        assert row is not None and (row.balance_pico, row.held_pico) == (USD, 2 * FLOOR_PICO)
        assert (await session.execute(sa.select(sa.func.count()).select_from(UsageEvent))).scalar_one() == 0


async def test_both_paths_write_the_same_rows(postgres_url: str) -> None:
    """The asyncpg path and the session path agree on every written column (trial bucket, caps, keys)."""
    from gateway.billing.trials import grant_trial
    from gateway.db.engine import create_engine, session_factory

    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    written = []
    try:
        for path in (_through_a_session, _straight_to_asyncpg):
            user, account, key = await make_account(sessions, credits_pico=USD, key_limit_pico=USD)
            async with sessions() as session:
                await grant_trial(session, account_id=account, credit_pico=3 * FLOOR_PICO, days=7, note="t")
                await session.commit()
            items = []
            for index, cost in enumerate([2 * FLOOR_PICO, 5 * FLOOR_PICO, 0, 3]):
                request_id = f"{path.__name__}-{index}"
                await _hold(sessions, request_id, account, key, 2 * FLOOR_PICO, key_limited=index % 2 == 0)
                item = _item(request_id, user, account, key, cost=cost)
                items.append(dataclasses.replace(item, ttft_ms=None, node=None) if index == 2 else item)
            charges = await path(sessions, [*items, items[1]])
            async with sessions() as session:
                account_row = await session.get(Account, account)
                key_row = await session.get(ApiKey, key)
                assert account_row is not None and key_row is not None
                ledger = (await session.execute(
                    sa.select(CreditTransaction.kind, CreditTransaction.amount_pico, CreditTransaction.trial_pico,
                              CreditTransaction.balance_after_pico)
                    .where(CreditTransaction.account_id == account).order_by(CreditTransaction.id))).all()
                events = (await session.execute(
                    sa.select(UsageEvent).where(UsageEvent.account_id == account).order_by(UsageEvent.id))).scalars()
                written.append((charges, (account_row.balance_pico, account_row.held_pico, account_row.trial_pico),
                                (key_row.spend_pico, key_row.held_pico, key_row.spend_month), ledger,
                                [{**event.model_dump(), "id": None, "request_id": event.request_id.split("-")[-1],
                                  "account_id": None, "user_id": None, "api_key_id": None, "created_at": None}
                                 for event in events]))
    finally:
        await engine.dispose()
    assert written[0] == written[1]
    assert written[0][0] == [2 * FLOOR_PICO, 2 * FLOOR_PICO, 0, 3, None]
