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

from gateway.billing.money import MAX_BALANCE_PICO, format_usd
from gateway.db.models import Account, CreditTransaction, utcnow
from gateway.errors import GatewayError

Kind = Literal["grant", "topup", "usage", "admin_adjust", "refund"]
KINDS: tuple[Kind, ...] = ("grant", "topup", "usage", "admin_adjust", "refund")


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
) -> int:
    """Apply `amount_pico` (signed) to the account and write its ledger row; return the new balance.

    `release_pico` releases that much of the account's held credits in the same update (settling a
    request). A debit never takes the balance below the credits still held for other requests. A
    zero amount only releases and writes no ledger row. Does not commit.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ledger kind {kind!r}")
    accounts = Account.__table__  # type: ignore[attr-defined]
    values: dict[str, object] = {"balance_pico": accounts.c.balance_pico + amount_pico, "updated_at": utcnow()}
    if release_pico:
        values["held_pico"] = accounts.c.held_pico - release_pico
    statement = sa.update(accounts).where(accounts.c.id == account_id).values(**values) \
        .returning(accounts.c.balance_pico)
    if amount_pico < 0:
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
    session.add(CreditTransaction(account_id=account_id, kind=kind, amount_pico=amount_pico,
                                  balance_after_pico=balance_after, request_id=request_id, note=note,
                                  actor_user_id=actor_user_id))
    return int(balance_after)
