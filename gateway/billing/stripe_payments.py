"""Stripe: Checkout Sessions for credit (official `stripe` SDK) and the webhook that credits them.

Events handled (enable these on the webhook endpoint, README "Billing and payments"):

- `checkout.session.completed` / `checkout.session.async_payment_succeeded`: credit the session's
  payment once, when `payment_status` is `paid` and `amount_total`/`currency` are what we asked;
- `charge.refunded`: take back credit in proportion to `amount_refunded` (cumulative);
- `charge.dispute.closed` with `status: lost`: take back the disputed part;
- `invoice.paid`, `customer.subscription.updated`/`deleted`, and `checkout.session.completed` in
  subscription mode: paid plans (gateway/billing/stripe_subscriptions.py).

Anything else is stored as `ignored`. The signature is checked with the SDK's
`WebhookSignature.verify_header` (HMAC-SHA256 of "t.payload", 5-minute tolerance) before the
body is even parsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import stripe
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing import payments, stripe_subscriptions
from gateway.billing.offers import Offer
from gateway.billing.payments import Outcome
from gateway.billing.stripe_client import client_for, provider_error
from gateway.db.models import Payment
from gateway.errors import GatewayError
from gateway.registry import Registry
from gateway.settings import Settings

log = logging.getLogger("pr.billing")

PROVIDER = "stripe"
SIGNATURE_TOLERANCE_SECONDS = 300
CREDIT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


@dataclass(frozen=True)
class CheckoutLink:
    payment_id: str
    session_id: str
    url: str


def invalid_signature() -> GatewayError:
    return GatewayError(400, "invalid_signature", "The Stripe-Signature header is missing or does not match "
                        "this endpoint's signing secret.")


async def create_checkout(sessions: async_sessionmaker[AsyncSession], settings: Settings, *, account_id: str,
                          offer: Offer, currency: str) -> CheckoutLink:
    """Open a pending payment and a Stripe Checkout Session for it; return the session's URL.

    The session carries `client_reference_id` = the account and `metadata.payment_id` = our payment
    id; our payment id is also the Stripe idempotency key, so an SDK retry makes no second session.
    Raises 502 `payment_provider_error` when Stripe refuses or cannot be reached.
    """
    async with sessions() as session:
        payment = await payments.open_payment(session, account_id=account_id, provider=PROVIDER, offer=offer,
                                              currency=currency)
        await session.commit()
    base = settings.public_base_url
    params: dict[str, Any] = {
        "mode": "payment",
        "client_reference_id": account_id,
        "line_items": [{"quantity": 1, "price_data": {
            "currency": currency, "unit_amount": offer.price_minor,
            "product_data": {"name": f"PrivateRouter credits: {offer.label}"}}}],
        "metadata": {"payment_id": payment.id, "account_id": account_id, "offer": offer.name},
        "payment_intent_data": {"metadata": {"payment_id": payment.id}},
        "success_url": f"{base}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{base}/billing?checkout=cancelled",
    }
    http = stripe.HTTPXClient(timeout=20)  # the SDK's async transport (httpx); closed after the call
    client = client_for(settings, http)
    try:
        created = await client.v1.checkout.sessions.create_async(params, {"idempotency_key": payment.id})  # type: ignore[arg-type]
    except stripe.StripeError as exc:
        log.error("stripe checkout for payment %s failed: %s: %s", payment.id, type(exc).__name__, exc)
        await payments.mark_failed(sessions, payment.id)
        raise provider_error() from None
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]
    async with sessions() as session:
        stored = await session.get(Payment, payment.id)
        assert stored is not None
        stored.provider_ref = created.id
        await session.commit()
    return CheckoutLink(payment.id, created.id, str(created.url))


def verify_event(payload: bytes, header: str | None, secret: str) -> dict[str, Any]:
    """The event of a correctly signed delivery; 400 `invalid_signature` or `invalid_body` otherwise."""
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, SIGNATURE_TOLERANCE_SECONDS)
    except (stripe.SignatureVerificationError, UnicodeDecodeError):
        raise invalid_signature() from None
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        event = None
    if (not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str)
            or not isinstance(event.get("data"), dict) or not isinstance(event["data"].get("object"), dict)):
        raise GatewayError(400, "invalid_body", "A Stripe event needs id, type and data.object.")
    return event


async def handle_event(sessions: async_sessionmaker[AsyncSession], registry: Registry,
                       event: dict[str, Any]) -> Outcome:
    """Apply one verified event exactly once and store it with its outcome; commits."""
    async with sessions() as session:
        row = await payments.claim_event(session, provider=PROVIDER, event_id=event["id"], type=event["type"])
        if row is None:
            await session.rollback()
            log.info("stripe event %s (%s) seen before: not applied again", event["id"], event["type"])
            return Outcome("duplicate")
        outcome = await _apply(session, registry, event["type"], event["data"]["object"])
        await payments.finish_event(session, row, outcome)
        await session.commit()
    log.info("stripe event %s (%s): %s", event["id"], event["type"], outcome.outcome)
    return outcome


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _minor(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def _apply(session: AsyncSession, registry: Registry, type: str, obj: dict[str, Any]) -> Outcome:
    if type in CREDIT_EVENTS and obj.get("mode", "payment") == "payment":
        return await _checkout_paid(session, obj)
    if type == "checkout.session.completed" and obj.get("mode") == "subscription":
        return await stripe_subscriptions.session_completed(session, registry, obj)
    if type == "invoice.paid":
        return await stripe_subscriptions.invoice_paid(session, registry, obj, registry.billing.currency)
    if type in ("customer.subscription.deleted", "customer.subscription.updated"):
        return await stripe_subscriptions.subscription_changed(session, obj,
                                                               deleted=type == "customer.subscription.deleted")
    if type == "charge.refunded":
        charge_ref = _text(obj, "payment_intent")
        refunded = _minor(obj, "amount_refunded")
        if charge_ref is None or refunded is None:
            return Outcome("ignored", "charge without payment_intent or amount_refunded")
        return await payments.reverse_payment(session, provider=PROVIDER, charge_ref=charge_ref,
                                              refunded_minor=refunded, note=f"Stripe refund of charge {obj.get('id')}")
    if type == "charge.dispute.closed":
        charge_ref = _text(obj, "payment_intent")
        amount = _minor(obj, "amount")
        if obj.get("status") != "lost":
            return Outcome("ignored", f"dispute {obj.get('status')}")
        if charge_ref is None or amount is None:
            return Outcome("ignored", "dispute without payment_intent or amount")
        return await payments.reverse_payment(session, provider=PROVIDER, charge_ref=charge_ref,
                                              disputed_minor=amount, note=f"Stripe dispute {obj.get('id')} lost")
    return Outcome("ignored")


async def _checkout_paid(session: AsyncSession, obj: dict[str, Any]) -> Outcome:
    session_id = _text(obj, "id")
    payment = await payments.find_payment(session, provider=PROVIDER, provider_ref=session_id) if session_id else None
    if payment is None:
        return Outcome("unknown_session", session_id and session_id[:100])
    metadata = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    if obj.get("client_reference_id") != payment.account_id or metadata.get("payment_id") != payment.id:
        return Outcome("reference_mismatch", None, payment.account_id, payment_id=payment.id)
    if obj.get("payment_status") != "paid":
        return Outcome("awaiting_payment", str(obj.get("payment_status")), payment.account_id, payment_id=payment.id)
    paid = _minor(obj, "amount_total")
    currency = _text(obj, "currency")
    if paid is None or currency is None:
        return Outcome("amount_mismatch", "no amount_total or currency", payment.account_id, payment_id=payment.id)
    return await payments.credit_payment(session, payment, paid_minor=paid, currency=currency,
                                         charge_ref=_text(obj, "payment_intent"),
                                         note=f"top-up {payment.offer} via Stripe (payment {payment.id})")
