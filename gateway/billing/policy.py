"""Who may buy credit and how: the enabled payment providers and the offer a buyer picked.

PAYMENT_PROVIDERS defaults to `mock` on the embedded SQLite (demos) and to none on PostgreSQL:
a production deployment with no payment settings gives nothing away (issue 11).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.billing.money import PICO_PER_USD, format_usd
from gateway.billing.offers import BillingConfig, Offer
from gateway.errors import GatewayError
from gateway.fields import FieldError, parse_usd
from gateway.settings import Settings

log = logging.getLogger("pr.billing")


def payments_disabled(provider: str) -> GatewayError:
    """403 `payments_disabled`: the operator has not enabled this way of paying."""
    return GatewayError(403, "payments_disabled",
                        f"Payments through '{provider}' are not enabled on this server (PAYMENT_PROVIDERS).")


def require_provider(settings: Settings, provider: str) -> None:
    """Raise 403 `payments_disabled` unless `provider` is in PAYMENT_PROVIDERS."""
    if provider not in settings.payment_providers:
        raise payments_disabled(provider)


def options(settings: Settings, billing: BillingConfig) -> dict[str, Any]:
    """What the billing page offers: `{"providers": [...], "currency", "topup_amounts_usd", "packs"}`."""
    return {"providers": list(settings.payment_providers), **billing.as_json()}


def provider_offer(settings: Settings, billing: BillingConfig, provider: str, body: dict[str, Any]) -> Offer:
    """The offer `body` names, bought through `provider` (mock, stripe, btcpay): what every way of buying
    credit checks, on /api and on the /billing page alike.

    Raises 403 `payments_disabled` unless PAYMENT_PROVIDERS includes `provider`, then FieldError as
    `choose_offer` does.
    """
    require_provider(settings, provider)
    return choose_offer(billing, body)


def choose_offer(billing: BillingConfig, body: dict[str, Any]) -> Offer:
    """The offer a request body names: `{"amount_usd": "25"}` (an allowed amount) or `{"pack": "name"}`.

    Raises FieldError naming `amount_usd` or `pack`, with the allowed values in the message.
    """
    if "pack" in body:
        name = body["pack"]
        pack = billing.pack(name) if isinstance(name, str) else None
        if pack is None:
            known = ", ".join(p.name for p in billing.packs) or "none are offered"
            raise FieldError(f"pack must be one of: {known}.", param="pack")
        return pack
    allowed = ", ".join(_short(offer.price_pico) for offer in billing.amounts) or "none (no amounts are offered)"
    message = f"amount_usd must be one of {allowed} (an integer or a decimal string)."
    if "amount_usd" not in body:
        raise FieldError(message, param="amount_usd")
    try:
        price = parse_usd(body["amount_usd"], param="amount_usd")
    except FieldError:
        raise FieldError(message, param="amount_usd") from None
    offer = billing.amount(price)
    if offer is None:
        raise FieldError(message, param="amount_usd")
    return offer


def _short(pico: int) -> str:
    """10 for whole dollars, 20.50 otherwise (the message lists what a client may send)."""
    return str(pico // PICO_PER_USD) if pico % PICO_PER_USD == 0 else format_usd(pico)


def warn_if_unsafe(settings: Settings) -> None:
    """Log loudly at start when the mock provider (free credit on request) runs on PostgreSQL."""
    if "mock" in settings.payment_providers and not settings.is_sqlite:
        log.warning("PAYMENT_PROVIDERS includes 'mock' on PostgreSQL: ANY signed-in user can add credit for "
                    "free with POST /api/billing/topup. Remove 'mock' unless this is a demo.")
