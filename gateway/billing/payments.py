"""Payments through a provider (Stripe, BTCPay): open, credit exactly once, reverse; webhook audit.

Exactly-once is enforced by the database, not by this process, so it holds across replicas and
for concurrent redeliveries:

- every verified webhook is first inserted into `webhook_events` with INSERT ... ON CONFLICT DO
  NOTHING on (provider, event_id): a redelivery inserts nothing and is answered `duplicate`; a
  concurrent duplicate waits on the unique index (PostgreSQL) or the write lock (SQLite) until
  the first delivery commits, then inserts nothing;
- a payment moves pending -> paid with one conditional UPDATE, so two events for one checkout
  session (completed, then async_payment_succeeded) credit once.

The event row, the payment's new state and its ledger row are one transaction: a failure leaves
nothing behind and the provider's retry starts again from scratch.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing import ledger
from gateway.billing.money import format_usd
from gateway.billing.offers import Offer
from gateway.db.models import Payment, WebhookEvent, utcnow

log = logging.getLogger("pr.billing")

_payments = Payment.__table__  # type: ignore[attr-defined]
_events = WebhookEvent.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Outcome:
    """What a webhook did: `outcome` (credited, reversed, duplicate, amount_mismatch, ignored...)."""

    outcome: str
    detail: str | None = None
    account_id: str | None = None
    credited_pico: int = 0  # credited (> 0) or taken back (< 0)
    payment_id: str | None = None


async def open_payment(session: AsyncSession, *, account_id: str, provider: str, offer: Offer, currency: str,
                       kind: str = "topup") -> Payment:
    """A pending payment for `offer`, before the provider is asked for a checkout. Flushes."""
    payment = Payment(id=str(uuid.uuid4()), account_id=account_id, provider=provider, kind=kind,
                      amount_minor=offer.price_minor, currency=currency, credit_pico=offer.credit_pico,
                      offer=offer.name[:64])
    session.add(payment)
    await session.flush()
    return payment


async def mark_failed(sessions: async_sessionmaker[AsyncSession], payment_id: str) -> None:
    """The provider never opened a checkout for this payment: `failed`, so it can never be credited."""
    async with sessions() as session:
        await session.execute(sa.update(_payments).where(_payments.c.id == payment_id, _payments.c.status == "pending")
                              .values(status="failed", updated_at=utcnow()))
        await session.commit()


async def claim_event(session: AsyncSession, *, provider: str, event_id: str, type: str) -> int | None:
    """Insert the event as `processing` and return its row id, or None when it was seen before.

    Must be the transaction's first write: on SQLite it takes the write lock, which serialises the
    rest of the handler against other deliveries.
    """
    values = {"provider": provider, "event_id": event_id[:255], "type": type[:128], "outcome": "processing",
              "created_at": utcnow()}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert(_events) if dialect == "postgresql" else sqlite.insert(_events)
    statement = insert.values(**values).on_conflict_do_nothing(index_elements=["provider", "event_id"]) \
        .returning(_events.c.id)
    row = (await session.execute(statement)).first()
    return None if row is None else int(row[0])


async def finish_event(session: AsyncSession, event_row: int, outcome: Outcome) -> None:
    """Record what the event did (for audit)."""
    await session.execute(sa.update(_events).where(_events.c.id == event_row).values(
        outcome=outcome.outcome[:32], detail=(outcome.detail or None) and outcome.detail[:500],
        account_id=outcome.account_id))


async def find_payment(session: AsyncSession, *, provider: str, provider_ref: str) -> Payment | None:
    result = await session.execute(sa.select(Payment).where(
        _payments.c.provider == provider, _payments.c.provider_ref == provider_ref))
    return result.scalar_one_or_none()


async def credit_payment(session: AsyncSession, payment: Payment, *, paid_minor: int, currency: str,
                         charge_ref: str | None, note: str) -> Outcome:
    """Credit `payment` once if the provider collected exactly what was asked, in the asked currency.

    A different amount or currency marks the payment `mismatch` and credits nothing (an operator
    looks at it); a payment already paid is `already_credited`.
    """
    if paid_minor != payment.amount_minor or currency.lower() != payment.currency:
        await session.execute(sa.update(_payments).where(_payments.c.id == payment.id, _payments.c.status == "pending")
                              .values(status="mismatch", updated_at=utcnow()))
        detail = (f"paid {paid_minor} {currency.lower()}, asked {payment.amount_minor} {payment.currency}")
        log.warning("payment %s not credited: %s", payment.id, detail)
        return Outcome("amount_mismatch", detail, payment.account_id, payment_id=payment.id)
    now = utcnow()
    won = (await session.execute(
        sa.update(_payments).where(_payments.c.id == payment.id, _payments.c.status == "pending")
        .values(status="paid", paid_at=now, updated_at=now, charge_ref=charge_ref).returning(_payments.c.id))).first()
    if won is None:
        return Outcome("already_credited", None, payment.account_id, payment_id=payment.id)
    await ledger.post(session, account_id=payment.account_id, kind="topup", amount_pico=payment.credit_pico, note=note)
    return Outcome("credited", f"{format_usd(payment.credit_pico)} USD", payment.account_id, payment.credit_pico,
                   payment.id)


async def reverse_payment(session: AsyncSession, *, provider: str, charge_ref: str, refunded_minor: int | None = None,
                          disputed_minor: int = 0, note: str) -> Outcome:
    """Take back the credit of a refunded (cumulative `refunded_minor`) or lost-in-dispute part of a payment.

    Credit is taken back in proportion (credit x reversed / paid, rounded down, never more than was
    credited); the debit may take the balance below zero (`ledger.post(allow_negative=True)`).
    """
    payment = (await session.execute(
        sa.select(Payment).where(_payments.c.provider == provider, _payments.c.charge_ref == charge_ref,
                                 _payments.c.status == "paid").with_for_update())).scalar_one_or_none()
    if payment is None:
        return Outcome("unknown_charge", charge_ref[:100])
    refunded = max(payment.refunded_minor, refunded_minor or 0)
    disputed = payment.disputed_minor + disputed_minor
    reversed_minor = min(payment.amount_minor, refunded + disputed)
    target = payment.credit_pico * reversed_minor // payment.amount_minor if payment.amount_minor else 0
    debit = target - payment.reversed_pico
    await session.execute(sa.update(_payments).where(_payments.c.id == payment.id).values(
        refunded_minor=refunded, disputed_minor=disputed, reversed_pico=max(target, payment.reversed_pico),
        updated_at=utcnow()))
    if debit <= 0:
        return Outcome("nothing_to_reverse", None, payment.account_id, payment_id=payment.id)
    await ledger.post(session, account_id=payment.account_id, kind="reversal", amount_pico=-debit, note=note,
                      allow_negative=True)
    return Outcome("reversed", f"{format_usd(debit)} USD", payment.account_id, -debit, payment.id)
