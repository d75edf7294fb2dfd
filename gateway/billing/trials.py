"""Trial credit: its own bucket inside the balance, spent first, removed at expiry (issue 11, seed 002).

`accounts.trial_pico` is the part of `balance_pico` that is trial credit; every ledger row records
its share of the bucket (`credit_transactions.trial_pico`), so both the balance and the bucket are
sums of the ledger. Granting posts `trial_grant`; expiry posts `trial_expired` for what is left.
Debits spend the bucket first (gateway/billing/ledger.py, gateway/billing/settlement.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing import ledger
from gateway.billing.money import format_usd
from gateway.db.models import Account, utcnow
from gateway.fields import as_utc

_accounts = Account.__table__  # type: ignore[attr-defined]


async def grant_trial(session: AsyncSession, *, account_id: str, credit_pico: int, days: int, note: str,
                      actor_user_id: str | None = None) -> None:
    """Add `credit_pico` to the trial bucket; the bucket then expires `days` days from now (or later, if an
    earlier grant runs longer). Does not commit."""
    await ledger.post(session, account_id=account_id, kind="trial_grant", amount_pico=credit_pico, note=note,
                      actor_user_id=actor_user_id)
    ends = utcnow() + timedelta(days=days)
    current = (await session.execute(sa.select(_accounts.c.trial_expires_at)
                                     .where(_accounts.c.id == account_id))).scalar_one()
    if current is None or as_utc(current) < ends:
        await session.execute(sa.update(_accounts).where(_accounts.c.id == account_id).values(trial_expires_at=ends))


async def expire_trial(session: AsyncSession, account_id: str, now: datetime | None = None) -> int:
    """Remove what is left of the account's trial if it has expired; return the pico-USD removed. Commits.

    Credit still held for requests in flight is removed at the next call (after they settle), so the
    balance never drops below what is held.
    """
    now = now or utcnow()
    row = (await session.execute(
        sa.select(_accounts.c.balance_pico, _accounts.c.held_pico, _accounts.c.trial_pico,
                  _accounts.c.trial_expires_at)
        .where(_accounts.c.id == account_id).with_for_update())).first()
    if row is None or row.trial_expires_at is None or as_utc(row.trial_expires_at) > now:
        await session.rollback()
        return 0
    amount = min(int(row.trial_pico), max(0, int(row.balance_pico) - int(row.held_pico)))
    if amount > 0:
        await ledger.post(session, account_id=account_id, kind="trial_expired", amount_pico=-amount,
                          note=f"trial credit expired ({format_usd(amount)} USD unused)")
    if amount == int(row.trial_pico):
        await session.execute(sa.update(_accounts).where(_accounts.c.id == account_id).values(trial_expires_at=None))
    await session.commit()
    return amount


async def fresh_account(sessions: async_sessionmaker[AsyncSession], account: Account) -> Account:
    """`account` as a balance should show it: a trial past its expiry is removed first (then re-read), so
    neither `GET /api/billing/balance` nor the pages ever show stale trial credit."""
    if account.trial_expires_at is None or as_utc(account.trial_expires_at) > utcnow():
        return account
    async with sessions() as session:
        await expire_trial(session, account.id)
        refreshed = await session.get(Account, account.id, populate_existing=True)
    assert refreshed is not None
    return refreshed


async def expire_trials(session: AsyncSession, now: datetime | None = None, *, limit: int = 500) -> int:
    """Expire every due trial (up to `limit` accounts per call); return how many accounts were looked at."""
    now = now or utcnow()
    due = (await session.execute(sa.select(_accounts.c.id).where(_accounts.c.trial_expires_at <= now)
                                 .limit(limit))).scalars().all()
    await session.rollback()
    for account_id in due:
        await expire_trial(session, account_id, now)
    return len(due)
