"""Balance, mock top-ups and the ledger (`/api/billing/*`)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy.exc import SQLAlchemyError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import email_flows
from gateway.auth.deps import current_user
from gateway.billing import btcpay, ledger, policy, redemption, trials
from gateway.billing.payments import Outcome
from gateway.billing.topup import mock_offer, top_up
from gateway.context import AppContext, context
from gateway.db.models import Account, CreditTransaction
from gateway.errors import GatewayError
from gateway.fields import iso, parse_int, usd
from gateway.http import JSONResponse, read_json
from gateway.mail import Mailer

MAX_PAGE = 100
log = logging.getLogger("pr.billing")


def balance_json(account: Account) -> dict[str, Any]:
    """The balance with its trial bucket shown apart: `balance_usd` = `paid_usd` + `trial_usd`."""
    return {
        "balance_usd": usd(account.balance_pico),
        "held_usd": usd(account.held_pico),
        "available_usd": usd(max(0, account.balance_pico - account.held_pico)),
        "paid_usd": usd(account.balance_pico - account.trial_pico),
        "trial_usd": usd(account.trial_pico),
        "trial_expires_at": iso(account.trial_expires_at),
        "plan_name": account.plan_name,
        "monthly_quota_tokens": None,
    }


def transaction_json(entry: CreditTransaction) -> dict[str, Any]:
    return {"id": entry.id, "kind": entry.kind, "amount_usd": usd(entry.amount_pico),
            "balance_after_usd": usd(entry.balance_after_pico), "note": entry.note, "request_id": entry.request_id,
            "created_at": iso(entry.created_at)}


async def balance(request: Request) -> Response:
    """The balance; an expired trial is removed first, so the answer never shows stale trial credit."""
    member = await current_user(request)
    return JSONResponse(balance_json(await trials.fresh_account(context(request).sessions, member.account)))


async def topup(request: Request) -> Response:
    """Mock top-up of an allowed amount or pack (no card is charged); 403 `payments_disabled` unless
    PAYMENT_PROVIDERS includes mock."""
    member = await current_user(request)
    ctx = context(request)
    offer = mock_offer(ctx.settings, ctx.registry.current.billing, await read_json(request))
    async with ctx.sessions() as session:
        account = await top_up(session, member=member, offer=offer)
        await session.commit()
    ctx.metrics.credit_transaction("topup")
    return JSONResponse(balance_json(account))


async def checkout(request: Request) -> Response:
    """Start a Stripe Checkout for an allowed amount or pack: `{"amount_usd"}` or `{"pack"}` ->
    `{"payment_id", "session_id", "checkout_url"}`; 403 `payments_disabled` unless stripe is enabled."""
    from gateway.billing import stripe_payments  # the Stripe SDK (~5 MB) only once Stripe is used

    member = await current_user(request)
    ctx = context(request)
    billing = ctx.registry.current.billing
    offer = policy.provider_offer(ctx.settings, billing, "stripe", await read_json(request))
    link = await stripe_payments.create_checkout(ctx.sessions, ctx.settings, account_id=member.account.id,
                                                 offer=offer, currency=billing.currency)
    return JSONResponse({"payment_id": link.payment_id, "session_id": link.session_id, "checkout_url": link.url})


async def subscribe(request: Request) -> Response:
    """Buy a paid plan through a Stripe subscription: `{"plan"}` -> `{"session_id", "checkout_url"}`."""
    from gateway.billing import stripe_subscriptions  # the Stripe SDK (~5 MB) only once Stripe is used

    member = await current_user(request)
    ctx = context(request)
    policy.require_provider(ctx.settings, "stripe")
    body = await read_json(request)
    session_id, url = await stripe_subscriptions.start_checkout(ctx.sessions, ctx.settings, ctx.registry.current,
                                                                account_id=member.account.id, plan=body.get("plan"))
    return JSONResponse({"session_id": session_id, "checkout_url": url})


async def stripe_webhook(request: Request) -> Response:
    """Stripe's deliveries: signature checked first (400 otherwise, nothing applied), then applied once."""
    from gateway.billing import stripe_payments  # the Stripe SDK (~5 MB) only once Stripe is used

    ctx = context(request)
    policy.require_provider(ctx.settings, "stripe")
    assert ctx.settings.stripe_webhook_secret is not None
    event = stripe_payments.verify_event(await request.body(), request.headers.get("stripe-signature"),
                                         ctx.settings.stripe_webhook_secret)
    try:
        outcome = await stripe_payments.handle_event(ctx.sessions, ctx.registry.current, event)
    except (SQLAlchemyError, OSError):
        log.exception("stripe event %s not applied; Stripe will deliver it again", event["id"])
        raise GatewayError(503, "service_unavailable", "The event could not be stored now; deliver it again.",
                           type="server_error") from None
    return _received(ctx, outcome, "Stripe")


def _received(ctx: AppContext, outcome: Outcome, provider: str) -> Response:
    """The webhook's answer; a receipt is mailed after it when credit was bought and email is configured."""
    ledger_kind = {"credited": "topup", "plan_paid": "grant", "reversed": "reversal"}.get(outcome.outcome)
    if ledger_kind is not None and outcome.credited_pico:
        ctx.metrics.credit_transaction(ledger_kind)  # pr_credit_transactions_total{kind} (seed 004)
    mailer = Mailer.from_settings(ctx.settings)
    background = None
    if mailer is not None and outcome.outcome in ("credited", "plan_paid"):
        background = BackgroundTask(email_flows.send_receipt, ctx.sessions, mailer, outcome, provider)
    return JSONResponse({"received": True, "outcome": outcome.outcome}, background=background)


async def redeem(request: Request) -> Response:
    """Redeem a code: `{"code": "PR-..."}` -> the balance; 400 `invalid_code`, 429 after repeated failures."""
    member = await current_user(request)
    body = await read_json(request)
    ctx = context(request)
    ip = request.scope["state"].get("client_ip")
    account = await redemption.redeem_throttled(ctx.sessions, ctx.redeem_throttle, secret=ctx.settings.app_secret_key,
                                                code=body.get("code"), account_id=member.account.id,
                                                actor_user_id=member.user.id, ip=ip)
    ctx.metrics.credit_transaction("redeem")
    return JSONResponse(balance_json(account))


async def btcpay_invoice(request: Request) -> Response:
    """Pay with BTCPay: `{"amount_usd"}` or `{"pack"}` -> `{"payment_id", "invoice_id", "checkout_url"}`."""
    member = await current_user(request)
    ctx = context(request)
    billing = ctx.registry.current.billing
    offer = policy.provider_offer(ctx.settings, billing, "btcpay", await read_json(request))
    link = await btcpay.create_invoice(ctx.sessions, ctx.settings, account_id=member.account.id, offer=offer,
                                       currency=billing.currency)
    return JSONResponse({"payment_id": link.payment_id, "invoice_id": link.invoice_id, "checkout_url": link.url})


async def btcpay_webhook(request: Request) -> Response:
    """BTCPay's deliveries: BTCPay-Sig checked first (400 otherwise), InvoiceSettled credited once."""
    ctx = context(request)
    policy.require_provider(ctx.settings, "btcpay")
    assert ctx.settings.btcpay_webhook_secret is not None
    event = btcpay.verify_event(await request.body(), request.headers.get("btcpay-sig"),
                                ctx.settings.btcpay_webhook_secret)
    try:
        outcome = await btcpay.handle_event(ctx.sessions, ctx.settings, event)
    except (SQLAlchemyError, OSError, httpx.HTTPError):
        log.exception("btcpay delivery not applied; BTCPay will deliver it again")
        raise GatewayError(503, "service_unavailable", "The event could not be applied now; deliver it again.",
                           type="server_error") from None
    return _received(ctx, outcome, "BTCPay")


async def options(request: Request) -> Response:
    """The enabled payment providers, top-up amounts and packs (for the billing page); public."""
    ctx = context(request)
    return JSONResponse(policy.options(ctx.settings, ctx.registry.current.billing))


async def transactions(request: Request) -> Response:
    """The account's ledger, newest first."""
    member = await current_user(request)
    limit = parse_int(request.query_params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(request.query_params.get("offset"), param="offset", default=0, minimum=0)
    async with context(request).sessions() as session:
        total, entries = await ledger.page(session, account_id=member.account.id, limit=limit, offset=offset)
    items = [transaction_json(entry) for entry in entries]
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


routes = [
    Route("/api/billing/balance", balance, methods=["GET"]),
    Route("/api/billing/topup", topup, methods=["POST"]),
    Route("/api/billing/options", options, methods=["GET"]),
    Route("/api/billing/checkout", checkout, methods=["POST"]),
    Route("/api/billing/redeem", redeem, methods=["POST"]),
    Route("/api/billing/subscribe", subscribe, methods=["POST"]),
    Route("/api/billing/btcpay/invoice", btcpay_invoice, methods=["POST"]),
    Route("/api/billing/btcpay/webhook", btcpay_webhook, methods=["POST"]),
    Route("/api/billing/stripe/webhook", stripe_webhook, methods=["POST"]),
    Route("/api/billing/transactions", transactions, methods=["GET"]),
]
