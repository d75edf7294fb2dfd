"""/billing with real payment providers: only the enabled ones are offered; Stripe Checkout, BTCPay invoices
and plan subscriptions go through the same domain functions as /api (against the fake servers the
payment tests use); redemption codes with errors beside the field; the trial bucket shown apart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette

from gateway.accounts import require_member
from gateway.billing import redemption, trials
from gateway.db.models import Account, utcnow
from gateway.registry import parse
from gateway.settings import Settings
from tests.support.control_plane import ctx
from tests.support.fake_btcpay import API_KEY, STORE_ID, FakeBTCPay
from tests.support.fake_btcpay import WEBHOOK_SECRET as BTCPAY_SECRET
from tests.support.fake_stripe import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, signed
from tests.support.running import running
from tests.support.servers import serve_app
from tests.support.web import WebUser, text_of, web_signup

USD = 10**12
App = tuple[Starlette, httpx.AsyncClient]


@dataclass
class Shop:
    app: Starlette
    client: httpx.AsyncClient
    stripe: FakeStripe
    btcpay: FakeBTCPay
    user: WebUser

    async def balance(self) -> int:
        async with ctx(self.app).sessions() as session:
            return (await require_member(session, self.user.user_id)).account.balance_pico


@pytest.fixture
def fakes() -> Iterator[tuple[FakeStripe, str, FakeBTCPay, str]]:
    stripe, btcpay = FakeStripe(), FakeBTCPay()
    with serve_app(stripe.app()) as stripe_url, serve_app(btcpay.app()) as btcpay_url:
        yield stripe, stripe_url, btcpay, btcpay_url


@pytest.fixture
async def shop(make_settings: Callable[..., Settings], database_url: str,
               fakes: tuple[FakeStripe, str, FakeBTCPay, str]) -> AsyncIterator[Shop]:
    stripe, stripe_url, btcpay, btcpay_url = fakes
    settings = make_settings(DATABASE_URL=database_url, PAYMENT_PROVIDERS="stripe,btcpay",
                             STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                             STRIPE_API_BASE=stripe_url, BTCPAY_URL=btcpay_url, BTCPAY_STORE_ID=STORE_ID,
                             BTCPAY_API_KEY=API_KEY, BTCPAY_WEBHOOK_SECRET=BTCPAY_SECRET,
                             PUBLIC_BASE_URL="https://router.example.com")
    async with running(settings) as (app, client):
        yield Shop(app, client, stripe, btcpay, await web_signup(client, app))


async def test_only_the_enabled_providers_are_offered(shop: Shop, web: App) -> None:
    page = text_of(await shop.client.get("/billing"))
    assert "Pay by card" in page and "Pay $25" in page and "Pay $500" in page
    assert "Pay with Bitcoin" in page and "Invoice $25" in page
    assert "Test mode" not in page and "Add $25" not in page
    app, client = web  # PAYMENT_PROVIDERS=mock
    await web_signup(client, app)
    mock_page = text_of(await client.get("/billing"))
    assert "Add $25" in mock_page and "Pay by card" not in mock_page and "Pay with Bitcoin" not in mock_page
    assert "Redeem a code" in mock_page and "Plans" not in mock_page  # no plan has a Stripe price here


async def test_stripe_checkout_goes_to_stripe_and_the_webhook_credits(shop: Shop) -> None:
    response = await shop.client.post("/billing/checkout", data={"csrf_token": shop.user.csrf, "amount_usd": "25"})
    assert response.status_code == 303
    sent = shop.stripe.requests[0]
    session_id = response.headers["location"].removeprefix("https://checkout.stripe.com/c/pay/")
    assert session_id in shop.stripe.sessions
    assert (sent["mode"], sent["line_items[0][price_data][unit_amount]"]) == ("payment", "2500")
    assert sent["success_url"].startswith("https://router.example.com/billing?checkout=success")
    assert sent["cancel_url"] == "https://router.example.com/billing?checkout=cancelled"
    assert await shop.balance() == 1 * USD  # nothing before Stripe says it is paid
    payload, header = signed(shop.stripe.completed(session_id, event_id="evt_web"))
    hook = await shop.client.post("/api/billing/stripe/webhook", content=payload,
                                  headers={"Stripe-Signature": header, "Content-Type": "application/json"})
    assert hook.json()["outcome"] == "credited"
    back = text_of(await shop.client.get(f"/billing?checkout=success&session_id={session_id}"))
    assert "Thank you: the payment went through." in back and "Balance $26.00" in back
    cancelled = text_of(await shop.client.get("/billing?checkout=cancelled"))
    assert "Checkout cancelled: nothing was charged." in cancelled


async def test_checkout_refusals_are_pages_not_charges(shop: Shop) -> None:
    bad = await shop.client.post("/billing/checkout", data={"csrf_token": shop.user.csrf, "amount_usd": "26"})
    assert bad.status_code == 400 and "amount_usd must be one of 10, 25, 50, 100, 500" in bad.text
    unknown = await shop.client.post("/billing/btcpay", data={"csrf_token": shop.user.csrf, "pack": "Nope"})
    assert unknown.status_code == 400 and "pack must be one of" in unknown.text
    forged = await shop.client.post("/billing/checkout", data={"amount_usd": "25"})
    assert forged.status_code == 403
    mock = await shop.client.post("/billing/topup", data={"csrf_token": shop.user.csrf, "amount_usd": "25"})
    assert mock.status_code == 403 and "not enabled on this server" in mock.text
    shop.stripe.fail_with = 500
    failed = await shop.client.post("/billing/checkout", data={"csrf_token": shop.user.csrf, "amount_usd": "10"})
    assert failed.status_code == 502 and "nothing was charged" in text_of(failed)
    assert shop.stripe.requests == [] and await shop.balance() == 1 * USD


async def test_btcpay_invoice_goes_to_btcpay(shop: Shop) -> None:
    response = await shop.client.post("/billing/btcpay", data={"csrf_token": shop.user.csrf, "amount_usd": "10"})
    assert (response.status_code, response.headers["location"]) == (303, "https://btcpay.example.com/i/Inv0001")
    sent = shop.btcpay.requests[0]
    assert (sent["amount"], sent["currency"]) == ("10", "USD")
    assert sent["checkout"]["redirectURL"] == "https://router.example.com/billing?checkout=success"
    shop.btcpay.fail_with = 500
    failed = await shop.client.post("/billing/btcpay", data={"csrf_token": shop.user.csrf, "amount_usd": "10"})
    assert failed.status_code == 502 and "nothing was charged" in text_of(failed)


async def test_plans_with_a_stripe_price_can_be_subscribed(shop: Shop) -> None:
    holder = ctx(shop.app).registry
    text = holder.path.read_text().replace('  - name: pro\n    monthly_usd: "20"\n',
                                           '  - name: pro\n    monthly_usd: "20"\n    stripe_price_id: price_Pro20\n')
    holder.swap(parse(text))
    page = await shop.client.get("/billing")
    assert 'aria-label="Subscribe to pro"' in page.text and "Subscribe to free" not in page.text
    response = await shop.client.post("/billing/subscribe", data={"csrf_token": shop.user.csrf, "plan": "pro"})
    assert response.status_code == 303 and response.headers["location"].startswith("https://checkout.stripe.com/")
    sent = shop.stripe.requests[0]
    assert (sent["mode"], sent["line_items[0][price]"]) == ("subscription", "price_Pro20")
    refused = await shop.client.post("/billing/subscribe", data={"csrf_token": shop.user.csrf, "plan": "free"})
    assert refused.status_code == 400 and "plan must be one of: pro." in refused.text
    back = text_of(await shop.client.get("/billing?subscribe=cancelled"))
    assert "Subscription cancelled before payment: nothing was charged." in back


async def _codes(app: Starlette, count: int, face_usd: int) -> list[str]:
    settings = ctx(app).settings
    async with ctx(app).sessions() as session:
        batch = await redemption.create_batch(session, secret=settings.app_secret_key, count=count,
                                              face_pico=face_usd * USD, expires_at=None, reason="web test",
                                              created_by=None)
        await session.commit()
    return batch.codes


async def test_a_code_is_redeemed_once_with_errors_beside_the_field(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    [code] = await _codes(app, 1, 5)
    response = await client.post("/billing/redeem", data={"csrf_token": user.csrf, "code": code.lower()})
    assert (response.status_code, response.headers["location"]) == (303, "/billing?redeemed=1")
    page = text_of(await client.get("/billing?redeemed=1"))
    assert "Code redeemed" in page and "Balance $6.00" in page and "redeem +$5.00 $6.00" in page
    again = await client.post("/billing/redeem", data={"csrf_token": user.csrf, "code": code})
    assert again.status_code == 400
    assert 'aria-invalid="true" aria-describedby="e-code"' in again.text and 'id="e-code"' in again.text
    empty = await client.post("/billing/redeem", data={"csrf_token": user.csrf, "code": " "})
    assert empty.status_code == 400 and "code is required" in empty.text
    assert "Balance $6.00" in text_of(empty)


async def test_repeated_wrong_codes_are_locked_out_clearly(web: App) -> None:
    from gateway.auth.attempts import REDEEM_FAILURES_PER_HOUR

    app, client = web
    user = await web_signup(client, app)
    statuses = [(await client.post("/billing/redeem", data={"csrf_token": user.csrf,
                                                            "code": "PR-AAAAA-BBBBB-CCCCC-DDDDD"})).status_code
                for _ in range(REDEEM_FAILURES_PER_HOUR)]
    assert set(statuses) == {400}
    locked = await client.post("/billing/redeem", data={"csrf_token": user.csrf, "code": "PR-AAAAA-BBBBB-CCCCC-DDDDD"})
    assert locked.status_code == 429
    assert 'id="e-code"' in locked.text and "Too many" in text_of(locked)


async def test_the_trial_bucket_is_shown_apart_until_it_expires(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    async with ctx(app).sessions() as session:
        member = await require_member(session, user.user_id)
        await trials.grant_trial(session, account_id=member.account.id, credit_pico=3 * USD, days=7, note="trial")
        await session.commit()
        account = await session.get(Account, member.account.id, populate_existing=True)
    assert account is not None
    ends = account.trial_expires_at
    assert ends is not None
    billing = text_of(await client.get("/billing"))
    assert "Balance $4.00" in billing and "$1.00 paid · $3.00 trial credit, expires" in billing
    assert ends.strftime("%Y-%m-%d") in billing
    dashboard = text_of(await client.get("/dashboard"))
    assert "$3.00 of it trial credit, expires" in dashboard
    async with ctx(app).sessions() as session:  # expiry in the past: the pages remove it before showing
        stored = await session.get(Account, member.account.id)
        assert stored is not None
        stored.trial_expires_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    after = text_of(await client.get("/billing"))
    assert "Balance $1.00" in after and "trial credit" not in after.split("Ledger")[0]
    assert "trial_expired −$3.00 $1.00" in after
