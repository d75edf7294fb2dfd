"""The credits ledger. Every change of a balance goes through `post()`: the balance update and its
`credit_transactions` row (with the balance after it) happen in the caller's transaction, so
the ledger always sums to the balance.

The update is a single conditional `UPDATE ... RETURNING`, which takes the row lock on PostgreSQL
and the write lock on SQLite: concurrent posts serialise and no update is lost.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway.billing.money import MAX_BALANCE_PICO, format_usd
from gateway.db.models import Account, CreditTransaction, utcnow
from gateway.errors import GatewayError

Kind = Literal["grant", "topup", "usage", "admin_adjust", "refund", "reversal", "redeem", "trial_grant",
               "trial_expired"]
# reversal: a provider refund or a lost dispute takes back credit it had bought; redeem: a
# redemption code; trial_grant/trial_expired: the trial bucket's credit and its removal (issue 11).
KINDS: tuple[Kind, ...] = ("grant", "topup", "usage", "admin_adjust", "refund", "reversal", "redeem", "trial_grant",
                           "trial_expired")


async def page(session: AsyncSession, *, account_id: str, limit: int,
               offset: int) -> tuple[int, list[CreditTransaction]]:
    """(total entries, one page newest first) of an account's ledger."""
    mine = col(CreditTransaction.account_id) == account_id
    total = await session.scalar(sa.select(sa.func.count()).select_from(CreditTransaction).where(mine))
    rows = await session.execute(sa.select(CreditTransaction).where(mine).order_by(col(CreditTransaction.id).desc())
                                 .limit(limit).offset(offset))
    return int(total or 0), list(rows.scalars())


class InsufficientBalance(Exception):
    """A debit would take the free balance (balance minus open holds) below zero."""


class BalanceLimitExceeded(GatewayError):
    """A credit would take the balance past what the database stores (BIGINT pico-USD): 400."""

    def __init__(self) -> None:
        super().__init__(400, "balance_limit_exceeded", "This credit would take the balance past the largest "
                         f"one kept ({format_usd(MAX_BALANCE_PICO)} USD).", param="amount_usd")


async def post(
    session: AsyncSession,
    *,
    account_id: str,
    kind: Kind,
    amount_pico: int,
    note: str | None = None,
    request_id: str | None = None,
    actor_user_id: str | None = None,
    release_pico: int = 0,
    allow_negative: bool = False,
) -> int:
    """Apply `amount_pico` (signed) to the account and write its ledger row; return the new balance.

    `release_pico` releases that much of the account's held credits in the same update (settling a
    request). A debit never takes the balance below the credits still held for other requests. A
    zero amount only releases and writes no ledger row. Does not commit.

    `allow_negative` (payment reversals only) applies a debit whatever the balance: money already
    spent cannot be un-spent, so the balance goes below zero and holds refuse the account until a
    top-up.

    The trial bucket (`accounts.trial_pico`, part of the balance): `trial_grant` adds to it,
    `trial_expired` removes from it, and any other debit except a reversal (which takes back paid
    credit) spends it first; the row's `trial_pico` records the bucket's share.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ledger kind {kind!r}")
    accounts = Account.__table__  # type: ignore[attr-defined]
    trial = await _trial_share(session, accounts, account_id, kind, amount_pico)
    values: dict[str, object] = {"balance_pico": accounts.c.balance_pico + amount_pico, "updated_at": utcnow()}
    if trial:
        values["trial_pico"] = accounts.c.trial_pico + trial
    if release_pico:
        values["held_pico"] = accounts.c.held_pico - release_pico
    statement = sa.update(accounts).where(accounts.c.id == account_id).values(**values) \
        .returning(accounts.c.balance_pico)
    if amount_pico < 0 and not allow_negative:
        statement = statement.where(accounts.c.balance_pico + amount_pico >= accounts.c.held_pico - release_pico)
    elif amount_pico > 0:  # compared without computing the sum, which could itself overflow
        statement = statement.where(accounts.c.balance_pico <= MAX_BALANCE_PICO - amount_pico)
    balance_after = (await session.execute(statement)).scalar_one_or_none()
    if balance_after is None:
        if amount_pico < 0 and await session.get(Account, account_id) is not None:
            raise InsufficientBalance(account_id)
        if amount_pico > 0 and await session.get(Account, account_id) is not None:
            raise BalanceLimitExceeded()
        raise LookupError(f"no account {account_id}")
    if amount_pico == 0:
        return int(balance_after)
    session.add(CreditTransaction(account_id=account_id, kind=kind, amount_pico=amount_pico, trial_pico=trial,
                                  balance_after_pico=balance_after, request_id=request_id, note=note,
                                  actor_user_id=actor_user_id))
    return int(balance_after)


async def _trial_share(session: AsyncSession, accounts: sa.Table, account_id: str, kind: Kind, amount_pico: int) -> int:
    """The signed part of `amount_pico` that moves the trial bucket (see `post`).

    A reversal takes paid credit first and the trial only for what paid credit cannot cover, so the
    bucket never exceeds a non-negative balance.
    """
    if kind in ("trial_grant", "trial_expired"):
        return amount_pico
    if amount_pico >= 0:
        return 0
    # Locks the row (PostgreSQL) so the share and the UPDATE that follows see the same bucket.
    row = (await session.execute(sa.select(accounts.c.balance_pico, accounts.c.trial_pico)
                                 .where(accounts.c.id == account_id).with_for_update())).first()
    if row is None:
        return 0
    trial = int(row.trial_pico)
    debit = -amount_pico
    if kind == "reversal":
        debit = max(0, debit - max(0, int(row.balance_pico) - trial))
    return -min(trial, debit)
