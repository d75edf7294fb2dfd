"""`/billing`: balance (paid and trial credit), plan, the enabled ways of buying credit (mock buttons, Stripe
Checkout, BTCPay invoices, plan subscriptions), redemption codes, and the ledger (paginated).

Every form calls the domain function its `/api/billing/*` twin calls: `policy.provider_offer` decides
what may be bought and through which provider (PAYMENT_PROVIDERS, models.yaml's `billing:`), and the
providers' modules open the payment; the page only turns their answers into redirects and notices.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.billing import btcpay, ledger, policy, redemption, trials
from gateway.billing.money import format_usd
from gateway.billing.topup import mock_offer, top_up
from gateway.context import context
from gateway.errors import GatewayError
from gateway.fields import FieldError, parse_int, parse_usd
from gateway.settings import Settings
from gateway.web.dashboard import plan_of
from gateway.web.forms import Form, read_form
from gateway.web.render import dollars, page, redirect, render
from gateway.web.security import add_security_headers, allow_form_targets
from gateway.web.session import WebSession, check_form, require_session

PAGE_SIZE = 20
STRIPE_CHECKOUT_ORIGIN = "https://checkout.stripe.com"  # where Checkout Session URLs point
OFFER_FIELDS = ("amount_usd", "pack")
# Where the payment providers send the buyer back (success_url / cancel_url / redirectURL).
RETURN_NOTICES = {
    ("checkout", "success"): ("ok", "Thank you: the payment went through. The credit appears here as soon as the "
                                    "payment provider confirms it (usually within a minute)."),
    ("checkout", "cancelled"): ("warn", "Checkout cancelled: nothing was charged."),
    ("subscribe", "success"): ("ok", "Thank you: your subscription has started. The new plan and its credits "
                                     "appear here once Stripe confirms the first payment."),
    ("subscribe", "cancelled"): ("warn", "Subscription cancelled before payment: nothing was charged."),
}


@page
async def billing(request: Request) -> Response:
    web = await require_session(request)
    return await _billing_page(request, web, Form())


async def _billing_page(request: Request, web: WebSession, form: Form, *, status: int = 200) -> Response:
    """The page; `form` carries the redemption form's values and errors when it is shown again."""
    ctx = context(request)
    number = parse_int(request.query_params.get("page"), param="page", default=1, minimum=1, maximum=10**6)
    account = await trials.fresh_account(ctx.sessions, web.member.account)
    async with ctx.sessions() as session:
        total, entries = await ledger.page(session, account_id=account.id, limit=PAGE_SIZE,
                                           offset=(number - 1) * PAGE_SIZE)
    registry = ctx.registry.current
    offers = registry.billing
    providers = policy.options(ctx.settings, offers)["providers"]
    sold_plans = [plan for plan in registry.plans.values() if plan.stripe_price_id] if "stripe" in providers else []
    response = render(request, "billing.html", web, account=account, plan=plan_of(registry, account.plan_name),
                      providers=providers, amounts=offers.amounts, packs=offers.packs, sold_plans=sold_plans,
                      entries=entries, total=total, page=number, pages=max(1, -(-total // PAGE_SIZE)),
                      notice=_notice(request), form=form, status=status)
    return allow_form_targets(response, _payment_origins(ctx.settings, providers))


def _payment_origins(settings: Settings, providers: list[str]) -> list[str]:
    """Where this page's forms end up (Stripe Checkout, the BTCPay server): the page's CSP must allow them."""
    origins = [STRIPE_CHECKOUT_ORIGIN] if "stripe" in providers else []
    if "btcpay" in providers and settings.btcpay_url:
        parts = urlsplit(settings.btcpay_url)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return origins


def _notice(request: Request) -> tuple[str, str] | None:
    """(tone, text) for the query's `added`, `redeemed`, `checkout` or `subscribe` value, if any (unknown
    values are ignored, never echoed)."""
    query = request.query_params
    for name in ("checkout", "subscribe"):
        found = RETURN_NOTICES.get((name, query.get(name, "")))
        if found:
            return found
    if query.get("redeemed") == "1":
        return "ok", "Code redeemed: its credit is in your balance."
    try:
        added = parse_usd(query.get("added"), param="added") if query.get("added") else None
    except FieldError:
        added = None
    return ("ok", f"Added ${format_usd(added)} to your balance.") if added else None


async def _posted(request: Request) -> tuple[WebSession, Form]:
    web = await require_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    return web, form


def _choice(form: Form) -> dict[str, str]:
    return {name: form.get(name) for name in OFFER_FIELDS if form.get(name)}


def _away(url: str) -> Response:
    """303 to the payment provider's own page (another host: the edge middleware leaves it alone)."""
    return add_security_headers(RedirectResponse(url, status_code=303))


@page
async def topup(request: Request) -> Response:
    """A mock top-up of one of the offered amounts or packs (the same rule as POST /api/billing/topup)."""
    web, form = await _posted(request)
    ctx = context(request)
    offer = mock_offer(ctx.settings, ctx.registry.current.billing, _choice(form))
    async with ctx.sessions() as session:
        await top_up(session, member=web.member, offer=offer)
        await session.commit()
    ctx.metrics.credit_transaction("topup")
    return redirect(request, f"/billing?added={_short(offer.credit_pico)}")


@page
async def checkout(request: Request) -> Response:
    """Stripe Checkout for an offered amount or pack (as POST /api/billing/checkout): 303 to Stripe's page,
    which sends the buyer back to `/billing?checkout=success|cancelled`."""
    from gateway.billing import stripe_payments  # the Stripe SDK (~5 MB) only once Stripe is used

    web, form = await _posted(request)
    ctx = context(request)
    billing_config = ctx.registry.current.billing
    offer = policy.provider_offer(ctx.settings, billing_config, "stripe", _choice(form))
    link = await stripe_payments.create_checkout(ctx.sessions, ctx.settings, account_id=web.member.account.id,
                                                 offer=offer, currency=billing_config.currency)
    return _away(link.url)


@page
async def btcpay_invoice(request: Request) -> Response:
    """A BTCPay invoice for an offered amount or pack (as POST /api/billing/btcpay/invoice): 303 to it."""
    web, form = await _posted(request)
    ctx = context(request)
    billing_config = ctx.registry.current.billing
    offer = policy.provider_offer(ctx.settings, billing_config, "btcpay", _choice(form))
    link = await btcpay.create_invoice(ctx.sessions, ctx.settings, account_id=web.member.account.id, offer=offer,
                                       currency=billing_config.currency)
    return _away(link.url)


@page
async def subscribe(request: Request) -> Response:
    """A Stripe subscription for a paid plan (as POST /api/billing/subscribe): 303 to Stripe's page."""
    from gateway.billing import stripe_subscriptions  # the Stripe SDK (~5 MB) only once Stripe is used

    web, form = await _posted(request)
    ctx = context(request)
    policy.require_provider(ctx.settings, "stripe")
    _, url = await stripe_subscriptions.start_checkout(ctx.sessions, ctx.settings, ctx.registry.current,
                                                       account_id=web.member.account.id, plan=form.get("plan"))
    return _away(url)


@page
async def redeem(request: Request) -> Response:
    """Redeem a code (as POST /api/billing/redeem, same throttle); a refusal is shown beside the field with
    its status (400, or 429 while locked out)."""
    web, form = await _posted(request)
    ctx = context(request)
    try:
        await redemption.redeem_throttled(
            ctx.sessions, ctx.redeem_throttle, secret=ctx.settings.app_secret_key, code=form.get("code"),
            account_id=web.member.account.id, actor_user_id=web.member.user.id,
            ip=request.scope["state"].get("client_ip"))
    except GatewayError as error:
        form.errors["code"] = error.message
        return await _billing_page(request, web, form, status=error.status)
    ctx.metrics.credit_transaction("redeem")
    return redirect(request, "/billing?redeemed=1")


def _short(pico: int) -> str:
    """25 for whole dollars, 20.50 otherwise (the notices' query value)."""
    return dollars(pico).removeprefix("$")


routes = [
    Route("/billing", billing, methods=["GET"]),
    Route("/billing/topup", topup, methods=["POST"]),
    Route("/billing/checkout", checkout, methods=["POST"]),
    Route("/billing/btcpay", btcpay_invoice, methods=["POST"]),
    Route("/billing/subscribe", subscribe, methods=["POST"]),
    Route("/billing/redeem", redeem, methods=["POST"]),
]
