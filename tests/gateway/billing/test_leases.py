"""Holds with owners: a lapsed lease's holds are settled `interrupted`, once, on both backends."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.holds import HoldOrigin, Quote, place_hold
from gateway.billing.leases import Lease, settle_dead_owners
from gateway.db.models import Account, Hold, InstanceLease, UsageEvent, utcnow
from tests.support.accounts import ledger_sum, make_account

USD = 10**12
async def _hold(sessions: async_sessionmaker[AsyncSession], request_id: str, account: str, key: str,
                owner: str | None, amount: int = 10**9) -> None:
    async with sessions() as session:
        await place_hold(session, request_id=request_id, account_id=account, key_id=key, key_has_limit=False,
                         quote=Quote(amount, 0, 0),
                         origin=HoldOrigin(owner, key, "privaterouter/fast", "chat.completions"))


async def test_the_holds_of_a_lapsed_lease_are_settled_interrupted_and_a_live_one_kept(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    user, account, key = await make_account(sessions, credits_pico=USD)
    dead, alive = Lease(sessions, ttl_seconds=1), Lease(sessions, ttl_seconds=60)
    await dead.renew()
    await alive.renew()
    await _hold(sessions, "dead-1", account, key, dead.instance_id)
    await _hold(sessions, "dead-2", account, key, dead.instance_id)
    await _hold(sessions, "orphan", account, key, "an-instance-with-no-lease")
    await _hold(sessions, "alive", account, key, alive.instance_id)
    later = utcnow() + timedelta(seconds=2)  # the dead lease has lapsed, the live one not
    assert await settle_dead_owners(sessions, now=later) == 3
    assert await settle_dead_owners(sessions, now=later) == 0  # settled once
    async with sessions() as session:
        events = {event.request_id: event for event in (await session.execute(sa.select(UsageEvent))).scalars()}
        assert set(events) == {"dead-1", "dead-2", "orphan"}
        assert all((event.status, event.error_code) == ("interrupted", "instance_lost") for event in events.values())
        assert all(event.cost_pico == 0 for event in events.values())  # the journal replay bills, not this
        assert events["dead-2"].api_key_id == key and events["dead-2"].user_id == user
        assert events["dead-2"].model_public_name == "privaterouter/fast"
        remaining = (await session.execute(sa.select(Hold.request_id))).scalars().all()
        assert remaining == ["alive"]
        row = await session.get(Account, account)
        assert row is not None and row.held_pico == 10**9
        assert row.balance_pico == USD == await ledger_sum(session, account)
        leases = (await session.execute(sa.select(InstanceLease.instance_id))).scalars().all()
        assert leases == [alive.instance_id]  # the lapsed lease is gone


async def test_a_paused_process_renews_by_registering_again(sessions: async_sessionmaker[AsyncSession]) -> None:
    lease = Lease(sessions, ttl_seconds=1)
    await lease.renew()
    await settle_dead_owners(sessions, now=utcnow() + timedelta(seconds=5))
    await lease.renew()
    async with sessions() as session:
        row = await session.get(InstanceLease, lease.instance_id)
        assert row is not None
    await lease.release()
    async with sessions() as session:
        assert await session.get(InstanceLease, lease.instance_id) is None


async def test_an_owner_whose_journal_awaits_replay_is_left_for_it(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    _, account, key = await make_account(sessions, credits_pico=USD)
    dead = Lease(sessions, ttl_seconds=1)
    await dead.renew()
    await _hold(sessions, "journaled", account, key, dead.instance_id)
    later = utcnow() + timedelta(seconds=2)
    assert await settle_dead_owners(sessions, skip_owners={dead.instance_id}, now=later) == 0
    async with sessions() as session:
        assert await session.get(InstanceLease, dead.instance_id) is not None  # kept until its journal is replayed
    assert await settle_dead_owners(sessions, now=later) == 1
