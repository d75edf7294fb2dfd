"""BTCPay Server (seed 002): Greenfield invoices for credit and the `BTCPay-Sig` webhook.

- `create_invoice`: a pending `payments` row, then `POST /api/v1/stores/{store}/invoices` (httpx,
  `Authorization: token <key>`) with `metadata.orderId` = our payment id; answers BTCPay's
  `checkoutLink`.
- `verify_event`: `BTCPay-Sig: sha256=<hex HMAC-SHA256(webhook secret, raw body)>`, compared in
  constant time before the body is parsed.
- `handle_event`: on `InvoiceSettled` the invoice is read back from the Greenfield API (the
  webhook body carries no amount) and credited once if it is `Settled` for exactly the amount and
  currency asked. Deliveries are stored in `webhook_events` keyed by `originalDeliveryId` (a
  redelivery has a new `deliveryId` but keeps that), so a redelivery applies nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing import payments
from gateway.billing.money import PICO_PER_USD, to_pico
from gateway.billing.offers import PICO_PER_CENT, Offer
from gateway.billing.payments import Outcome
from gateway.db.models import Payment
from gateway.errors import GatewayError
from gateway.settings import Settings

log = logging.getLogger("pr.billing")

PROVIDER = "btcpay"
TIMEOUT = httpx.Timeout(20.0)


@dataclass(frozen=True)
class InvoiceLink:
    payment_id: str
    invoice_id: str
    url: str


def provider_error() -> GatewayError:
    return GatewayError(502, "payment_provider_error", "The BTCPay server could not be reached or refused the "
                        "request; nothing was charged. Try again in a moment.", type="upstream_error")


def invalid_signature() -> GatewayError:
    return GatewayError(400, "invalid_signature", "The BTCPay-Sig header is missing or does not match this "
                        "endpoint's webhook secret.")


def _invoices_url(settings: Settings) -> str:
    return f"{settings.btcpay_url}/api/v1/stores/{settings.btcpay_store_id}/invoices"


def _headers(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"token {settings.btcpay_api_key}"}


def _amount_text(minor: int) -> str:
    return str(Decimal(minor * PICO_PER_CENT) / PICO_PER_USD)


async def create_invoice(sessions: async_sessionmaker[AsyncSession], settings: Settings, *, account_id: str,
                         offer: Offer, currency: str) -> InvoiceLink:
    """Open a pending payment and a BTCPay invoice for it; 502 `payment_provider_error` on failure."""
    async with sessions() as session:
        payment = await payments.open_payment(session, account_id=account_id, provider=PROVIDER, offer=offer,
                                              currency=currency)
        await session.commit()
    body = {"amount": _amount_text(offer.price_minor), "currency": currency.upper(),
            "metadata": {"orderId": payment.id, "accountId": account_id, "itemDesc": f"credits: {offer.label}"},
            "checkout": {"redirectURL": f"{settings.public_base_url}/billing?checkout=success"}}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            response = await client.post(_invoices_url(settings), json=body, headers=_headers(settings))
        invoice = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        invoice = None
    if not isinstance(invoice, dict) or not isinstance(invoice.get("id"), str) \
            or not isinstance(invoice.get("checkoutLink"), str):
        log.error("btcpay invoice for payment %s failed", payment.id)
        await payments.mark_failed(sessions, payment.id)
        raise provider_error()
    async with sessions() as session:
        stored = await session.get(Payment, payment.id)
        assert stored is not None
        stored.provider_ref = invoice["id"]
        await session.commit()
    return InvoiceLink(payment.id, invoice["id"], invoice["checkoutLink"])


def verify_event(payload: bytes, header: str | None, secret: str) -> dict[str, Any]:
    """The event of a correctly signed delivery; 400 `invalid_signature` or `invalid_body` otherwise."""
    expected = "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    if not header or not hmac.compare_digest(header.strip().lower().encode(), expected.encode()):
        raise invalid_signature()
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) \
            or not isinstance(event.get("originalDeliveryId") or event.get("deliveryId"), str):
        raise GatewayError(400, "invalid_body", "A BTCPay event needs type and deliveryId.")
    return event


async def _fetch_invoice(settings: Settings, invoice_id: str) -> dict[str, Any] | None:
    """The invoice as BTCPay has it now; None when it does not exist. Raises httpx.HTTPError when unreachable."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(f"{_invoices_url(settings)}/{invoice_id}", headers=_headers(settings))
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body = response.json()
    return body if isinstance(body, dict) else None


async def handle_event(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                       event: dict[str, Any]) -> Outcome:
    """Apply one verified delivery once and store it; commits. httpx.HTTPError when BTCPay is unreachable
    (the caller answers 503 and BTCPay redelivers)."""
    event_id = str(event.get("originalDeliveryId") or event["deliveryId"])
    invoice: dict[str, Any] | None = None
    invoice_id = event.get("invoiceId")
    settled = event["type"] == "InvoiceSettled" and isinstance(invoice_id, str) \
        and event.get("storeId") == settings.btcpay_store_id
    if settled:
        assert isinstance(invoice_id, str)
        invoice = await _fetch_invoice(settings, invoice_id)
    async with sessions() as session:
        row = await payments.claim_event(session, provider=PROVIDER, event_id=event_id, type=event["type"])
        if row is None:
            await session.rollback()
            return Outcome("duplicate")
        outcome = await _settled(session, str(invoice_id), invoice) if settled else Outcome("ignored")
        await payments.finish_event(session, row, outcome)
        await session.commit()
    log.info("btcpay delivery %s (%s): %s", event_id, event["type"], outcome.outcome)
    return outcome


async def _settled(session: AsyncSession, invoice_id: str, invoice: dict[str, Any] | None) -> Outcome:
    payment = await payments.find_payment(session, provider=PROVIDER, provider_ref=invoice_id)
    if payment is None or invoice is None:
        return Outcome("unknown_invoice", invoice_id[:100])
    metadata = invoice["metadata"] if isinstance(invoice.get("metadata"), dict) else {}
    if metadata.get("orderId") != payment.id:
        return Outcome("reference_mismatch", None, payment.account_id, payment_id=payment.id)
    if invoice.get("status") != "Settled":
        return Outcome("awaiting_payment", str(invoice.get("status")), payment.account_id, payment_id=payment.id)
    try:
        paid_pico = to_pico(str(invoice.get("amount")))
        paid_minor = paid_pico // PICO_PER_CENT if paid_pico % PICO_PER_CENT == 0 else -1
    except (ValueError, InvalidOperation):
        paid_minor = -1
    return await payments.credit_payment(session, payment, paid_minor=paid_minor,
                                         currency=str(invoice.get("currency") or ""), charge_ref=None,
                                         note=f"top-up {payment.offer} via BTCPay (payment {payment.id})")
