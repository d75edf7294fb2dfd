"""Paid plans through Stripe subscriptions (seed 000's "self-serve plan changes with Stripe").

A plan in models.yaml with a `stripe_price_id` can be bought: `start_checkout` opens a
subscription-mode Checkout Session whose subscription carries `metadata.account_id` and
`metadata.plan`. Then, from the webhook (gateway/billing/stripe_payments.py):

- `invoice.paid`: the account moves to the plan and its included credits are granted once per
  invoice with a non-zero `amount_paid` (a $0 invoice of a Stripe-side trial or coupon moves the
  plan only) (a `payments` row keyed by the invoice id, inserted with ON CONFLICT DO NOTHING);
- `customer.subscription.deleted`, or `customer.subscription.updated` to `canceled`, `unpaid` or
  `incomplete_expired` (Stripe gave up collecting): the account returns to `free`.

Stripe does not promise the order of events, so `invoice.paid` works from the invoice's own
subscription metadata even before `checkout.session.completed` has arrived.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import sqlalchemy as sa
import stripe
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.accounts import FREE_PLAN
from gateway.billing import ledger
from gateway.billing.payments import Outcome
from gateway.billing.stripe_client import client_for, provider_error
from gateway.db.models import Account, Payment, Subscription, utcnow
from gateway.errors import GatewayError
from gateway.fields import FieldError
from gateway.registry import Registry
from gateway.settings import Settings

log = logging.getLogger("pr.billing")

ENDED_STATUSES = ("canceled", "unpaid", "incomplete_expired")
_accounts = Account.__table__  # type: ignore[attr-defined]
_payments = Payment.__table__  # type: ignore[attr-defined]
_subscriptions = Subscription.__table__  # type: ignore[attr-defined]


async def start_checkout(sessions: async_sessionmaker[AsyncSession], settings: Settings, registry: Registry, *,
                         account_id: str, plan: object) -> tuple[str, str]:
    """A subscription Checkout Session for `plan`; returns (session id, URL).

    Raises FieldError(param="plan") for a plan that is unknown or not sold, 409 `subscription_exists`
    while the account has a live subscription, 502 `payment_provider_error` when Stripe fails.
    """
    sold = [name for name, item in registry.plans.items() if item.stripe_price_id]
    if not isinstance(plan, str) or plan not in sold:
        raise FieldError(f"plan must be one of: {', '.join(sold) or 'none are sold'}.", param="plan")
    price = registry.plans[plan].stripe_price_id
    async with sessions() as session:
        live = await session.scalar(sa.select(sa.func.count()).select_from(Subscription).where(
            _subscriptions.c.account_id == account_id, _subscriptions.c.status.not_in(ENDED_STATUSES)))
    if live:
        raise GatewayError(409, "subscription_exists", "This account already has a subscription; it must end "
                           "before another plan is bought.")
    metadata = {"account_id": account_id, "plan": plan}
    params: dict[str, Any] = {
        "mode": "subscription", "client_reference_id": account_id,
        "line_items": [{"price": price, "quantity": 1}],
        "metadata": metadata, "subscription_data": {"metadata": metadata},
        "success_url": f"{settings.public_base_url}/billing?subscribe=success&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{settings.public_base_url}/billing?subscribe=cancelled",
    }
    http = stripe.HTTPXClient(timeout=20)
    try:
        created = await client_for(settings, http).v1.checkout.sessions.create_async(
            params, {"idempotency_key": str(uuid.uuid4())})  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        log.error("stripe subscription checkout failed: %s: %s", type(exc).__name__, exc)
        raise provider_error() from None
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    return created.id, str(created.url)


def _subscription_of(invoice: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The invoice's subscription id and metadata (older and newer API versions put them apart)."""
    parent: dict[str, Any] = invoice["parent"] if isinstance(invoice.get("parent"), dict) else {}
    details: dict[str, Any] = {}
    if isinstance(parent.get("subscription_details"), dict):
        details = parent["subscription_details"]
    elif isinstance(invoice.get("subscription_details"), dict):
        details = invoice["subscription_details"]
    sub = invoice.get("subscription") or details.get("subscription")
    metadata: dict[str, Any] = details["metadata"] if isinstance(details.get("metadata"), dict) else {}
    return (sub if isinstance(sub, str) else None), metadata


async def _upsert(session: AsyncSession, *, sub_id: str, account_id: str, plan: str, status: str) -> None:
    values = {"id": sub_id, "provider": "stripe", "account_id": account_id, "plan_name": plan, "status": status,
              "created_at": utcnow(), "updated_at": utcnow()}
    insert = postgresql.insert(_subscriptions) if session.get_bind().dialect.name == "postgresql" \
        else sqlite.insert(_subscriptions)
    await session.execute(insert.values(**values).on_conflict_do_update(
        index_elements=["id"], set_={"status": status, "updated_at": values["updated_at"]}))


async def session_completed(session: AsyncSession, registry: Registry, obj: dict[str, Any]) -> Outcome:
    """Remember the subscription a Checkout created (the plan itself moves on `invoice.paid`)."""
    sub_id = obj.get("subscription")
    metadata = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    account_id, plan = metadata.get("account_id"), metadata.get("plan")
    if not isinstance(sub_id, str) or not isinstance(account_id, str) or plan not in registry.plans \
            or obj.get("client_reference_id") != account_id or await session.get(Account, account_id) is None:
        return Outcome("unknown_subscription", None)
    await _upsert(session, sub_id=sub_id, account_id=account_id, plan=str(plan), status="active")
    return Outcome("subscription_started", str(plan), account_id)


async def invoice_paid(session: AsyncSession, registry: Registry, invoice: dict[str, Any], currency: str) -> Outcome:
    """Move the account to the plan and grant its included credits, once per invoice."""
    sub_id, metadata = _subscription_of(invoice)
    invoice_id = invoice.get("id")
    if sub_id is None or not isinstance(invoice_id, str):
        return Outcome("ignored", "not a subscription invoice")
    known = await session.get(Subscription, sub_id)
    account_id = known.account_id if known is not None else metadata.get("account_id")
    plan_name = known.plan_name if known is not None else metadata.get("plan")
    if not isinstance(account_id, str) or await session.get(Account, account_id) is None \
            or not isinstance(plan_name, str) or plan_name not in registry.plans:
        return Outcome("unknown_subscription", sub_id[:100])
    paid_currency = str(invoice.get("currency") or "").lower()
    if paid_currency != currency:
        return Outcome("amount_mismatch", f"paid in {paid_currency}, plans are sold in {currency}", account_id)
    plan = registry.plans[plan_name]
    amount = invoice.get("amount_paid")
    paid = isinstance(amount, int) and not isinstance(amount, bool) and amount > 0
    # A $0 invoice (a Stripe-side trial, a 100% coupon) moves the plan but buys no credits.
    credits = plan.included_credits_pico if paid else 0
    insert = postgresql.insert(_payments) if session.get_bind().dialect.name == "postgresql" \
        else sqlite.insert(_payments)
    now = utcnow()
    first = (await session.execute(insert.values(
        id=str(uuid.uuid4()), account_id=account_id, provider="stripe", kind="subscription", provider_ref=invoice_id,
        charge_ref=None, status="paid", amount_minor=amount if paid else 0, currency=currency,
        credit_pico=credits, refunded_minor=0, disputed_minor=0, reversed_pico=0, offer=plan.name,
        paid_at=now, created_at=now, updated_at=now,
    ).on_conflict_do_nothing(index_elements=["provider", "provider_ref"]).returning(_payments.c.id))).first()
    if first is None:
        return Outcome("already_credited", invoice_id[:100], account_id)
    await _upsert(session, sub_id=sub_id, account_id=account_id, plan=plan.name, status="active")
    await session.execute(sa.update(_accounts).where(_accounts.c.id == account_id)
                          .values(plan_name=plan.name, updated_at=now))
    if credits > 0:
        await ledger.post(session, account_id=account_id, kind="grant", amount_pico=credits,
                          note=f"{plan.name} plan included credits (Stripe invoice {invoice_id})")
    return Outcome("plan_paid", plan.name, account_id, credits, str(first[0]))


async def subscription_changed(session: AsyncSession, obj: dict[str, Any], *, deleted: bool) -> Outcome:
    """Record the subscription's status; an ended subscription returns the account to `free`."""
    sub_id = obj.get("id")
    status = "canceled" if deleted else str(obj.get("status") or "")
    known = await session.get(Subscription, sub_id) if isinstance(sub_id, str) else None
    if known is None:
        return Outcome("unknown_subscription", str(sub_id)[:100])
    await session.execute(sa.update(_subscriptions).where(_subscriptions.c.id == known.id)
                          .values(status=status[:32], updated_at=utcnow()))
    if status not in ENDED_STATUSES:
        return Outcome("subscription_updated", status, known.account_id)
    # Only the plan this subscription bought is taken away (an admin may have moved the account since).
    await session.execute(sa.update(_accounts).where(_accounts.c.id == known.account_id,
                                                     _accounts.c.plan_name == known.plan_name)
                          .values(plan_name=FREE_PLAN, updated_at=utcnow()))
    return Outcome("plan_ended", status, known.account_id)
