"""Direct database set-up for storage-level tests (no HTTP, no argon2)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing import ledger
from gateway.db.models import Account, ApiKey, CreditTransaction, User


async def make_account(sessions: async_sessionmaker[AsyncSession], *, credits_pico: int,
                       key_limit_pico: int | None = None) -> tuple[str, str, str]:
    """A user with an account holding `credits_pico` (as a grant) and one key; returns the three ids."""
    user_id, account_id, key_id = (str(uuid.uuid4()) for _ in range(3))
    async with sessions() as session:
        session.add(User(id=user_id, email=f"{user_id}@example.com", password_hash="x"))
        await session.flush()
        session.add(Account(id=account_id, user_id=user_id))
        await session.flush()
        session.add(ApiKey(id=key_id, user_id=user_id, account_id=account_id, name="k", key_prefix="sk-pr-live-x",
                           key_hash=uuid.uuid4().hex, monthly_limit_pico=key_limit_pico))
        if credits_pico:
            await ledger.post(session, account_id=account_id, kind="grant", amount_pico=credits_pico)
        await session.commit()
    return user_id, account_id, key_id


async def ledger_sum(session: AsyncSession, account_id: str) -> int:
    total = (await session.execute(sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0))
                                   .where(CreditTransaction.account_id == account_id))).scalar_one()
    return int(total)
