"""BTCPay: Greenfield invoices against a fake BTCPay on loopback; BTCPay-Sig webhooks credited once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.db.models import Account, CreditTransaction, Payment, WebhookEvent
from gateway.settings import Settings
from tests.conftest import envelope
from tests.support.control_plane import Login, account_id, ctx, signup
from tests.support.fake_btcpay import API_KEY, STORE_ID, WEBHOOK_SECRET, FakeBTCPay, settled_event, sign
from tests.support.running import running
from tests.support.servers import serve_app

USD = 10**12
HOOK = "/api/billing/btcpay/webhook"
Shop = tuple[Starlette, httpx.AsyncClient, FakeBTCPay, Login, str]


@pytest.fixture
def fake() -> Iterator[tuple[FakeBTCPay, str]]:
    server = FakeBTCPay()
    with serve_app(server.app()) as url:
        yield server, url


@pytest.fixture
async def shop(make_settings: Callable[..., Settings], database_url: str,
               fake: tuple[FakeBTCPay, str]) -> AsyncIterator[Shop]:
    server, url = fake
    settings = make_settings(DATABASE_URL=database_url, PAYMENT_PROVIDERS="btcpay", BTCPAY_URL=url,
                             BTCPAY_STORE_ID=STORE_ID, BTCPAY_API_KEY=API_KEY, BTCPAY_WEBHOOK_SECRET=WEBHOOK_SECRET,
                             PUBLIC_BASE_URL="https://router.example.com")
    async with running(settings) as (app, client):
        buyer = await signup(client)
        yield app, client, server, buyer, await account_id(app, buyer)


async def _invoice(shop: Shop, **body: Any) -> dict[str, Any]:
    _, client, _, buyer, _ = shop
    response = await client.post("/api/billing/btcpay/invoice", headers=buyer.headers, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _deliver(shop: Shop, body: dict[str, Any], secret: str = WEBHOOK_SECRET) -> httpx.Response:
    payload = orjson.dumps(body)
    return await shop[1].post(HOOK, content=payload, headers={"BTCPay-Sig": sign(payload, secret)})


async def _balance(shop: Shop) -> int:
    async with ctx(shop[0]).sessions() as session:
        account = await session.get(Account, shop[4], populate_existing=True)
        total, trial = (await session.execute(
            sa.select(sa.func.sum(CreditTransaction.amount_pico), sa.func.sum(CreditTransaction.trial_pico))
            .where(CreditTransaction.account_id == shop[4]))).one()
    assert account is not None and (account.balance_pico, account.trial_pico) == (total, trial)
    return account.balance_pico


async def test_invoice_is_created_through_greenfield(shop: Shop) -> None:
    link = await _invoice(shop, amount_usd="25")
    server = shop[2]
    assert link["checkout_url"] == f"https://btcpay.example.com/i/{link['invoice_id']}"
    sent = server.requests[0]
    assert (sent["amount"], sent["currency"], sent["metadata"]["orderId"]) == ("25", "USD", link["payment_id"])
    assert sent["checkout"]["redirectURL"].startswith("https://router.example.com/billing")
    assert await _balance(shop) == USD


async def test_settled_invoice_is_credited_once(shop: Shop) -> None:
    link = await _invoice(shop, amount_usd="10")
    early = await _deliver(shop, settled_event(link["invoice_id"], "D1"))
    assert early.json()["outcome"] == "awaiting_payment"  # BTCPay still says New
    shop[2].invoices[link["invoice_id"]]["status"] = "Settled"
    assert (await _deliver(shop, settled_event(link["invoice_id"], "D2"))).json()["outcome"] == "credited"
    assert await _balance(shop) == 11 * USD
    redelivery = settled_event(link["invoice_id"], "D3", original="D2")
    assert (await _deliver(shop, redelivery)).json()["outcome"] == "duplicate"
    assert (await _deliver(shop, settled_event(link["invoice_id"], "D4"))).json()["outcome"] == "already_credited"
    concurrent = await asyncio.gather(*(_deliver(shop, settled_event(link["invoice_id"], f"C{i}")) for i in range(6)))
    assert {answer.json()["outcome"] for answer in concurrent} == {"already_credited"}
    assert await _balance(shop) == 11 * USD
    async with ctx(shop[0]).sessions() as session:
        stored = (await session.execute(sa.select(WebhookEvent.event_id, WebhookEvent.outcome)
                                        .where(WebhookEvent.provider == "btcpay").order_by(WebhookEvent.id))).all()
    assert [tuple(row) for row in stored][:3] == [("D1", "awaiting_payment"), ("D2", "credited"),
                                                  ("D4", "already_credited")]


async def test_concurrent_first_deliveries_credit_once(shop: Shop) -> None:
    link = await _invoice(shop, amount_usd="50")
    shop[2].invoices[link["invoice_id"]]["status"] = "Settled"
    answers = await asyncio.gather(*(_deliver(shop, settled_event(link["invoice_id"], "SAME")) for _ in range(6)))
    assert sorted(answer.json()["outcome"] for answer in answers) == ["credited"] + ["duplicate"] * 5
    assert await _balance(shop) == 51 * USD


@pytest.mark.parametrize("tamper", ["secret", "missing", "body", "prefix"])
async def test_badly_signed_deliveries_are_400(shop: Shop, tamper: str) -> None:
    link = await _invoice(shop, amount_usd="10")
    shop[2].invoices[link["invoice_id"]]["status"] = "Settled"
    payload = orjson.dumps(settled_event(link["invoice_id"], "D1"))
    headers = {"BTCPay-Sig": sign(payload)}
    if tamper == "secret":
        headers["BTCPay-Sig"] = sign(payload, "other-secret")
    elif tamper == "missing":
        headers = {}
    elif tamper == "body":
        payload = payload.replace(b'"D1"', b'"D9"')
    else:
        headers["BTCPay-Sig"] = headers["BTCPay-Sig"].removeprefix("sha256=")
    response = await shop[1].post(HOOK, content=payload, headers=headers)
    assert response.status_code == 400 and envelope(response)["code"] == "invalid_signature"
    assert await _balance(shop) == USD


async def test_wrong_amount_unknown_invoice_and_other_stores(shop: Shop) -> None:
    link = await _invoice(shop, amount_usd="25")
    invoice = shop[2].invoices[link["invoice_id"]]
    invoice.update(status="Settled", amount="24.99")
    assert (await _deliver(shop, settled_event(link["invoice_id"], "D1"))).json()["outcome"] == "amount_mismatch"
    assert (await _deliver(shop, settled_event("InvNope", "D2"))).json()["outcome"] == "unknown_invoice"
    foreign = settled_event(link["invoice_id"], "D3", store="OtherStore")
    assert (await _deliver(shop, foreign)).json()["outcome"] == "ignored"
    created = settled_event(link["invoice_id"], "D4", type="InvoiceCreated")
    assert (await _deliver(shop, created)).json()["outcome"] == "ignored"
    assert await _balance(shop) == USD


async def test_btcpay_down_is_502_on_invoice_and_503_on_webhook(shop: Shop) -> None:
    link = await _invoice(shop, amount_usd="10")
    shop[2].fail_with = 500
    _, client, _, buyer, _ = shop
    refused = await client.post("/api/billing/btcpay/invoice", headers=buyer.headers, json={"amount_usd": "10"})
    assert refused.status_code == 502 and envelope(refused)["code"] == "payment_provider_error"
    async with ctx(shop[0]).sessions() as session:
        failed = await session.scalar(sa.select(sa.func.count()).select_from(Payment).where(Payment.status == "failed"))
    assert failed == 1
    retry = await _deliver(shop, settled_event(link["invoice_id"], "D1"))
    assert retry.status_code == 503
    shop[2].fail_with = None
    shop[2].invoices[link["invoice_id"]]["status"] = "Settled"
    assert (await _deliver(shop, settled_event(link["invoice_id"], "D1"))).json()["outcome"] == "credited"


async def test_btcpay_refused_when_not_enabled(make_settings: Callable[..., Settings], database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url, PAYMENT_PROVIDERS="mock")) as (_, client):
        buyer = await signup(client)
        response = await client.post("/api/billing/btcpay/invoice", headers=buyer.headers, json={"amount_usd": "10"})
        assert response.status_code == 403 and envelope(response)["code"] == "payments_disabled"
        payload = orjson.dumps(settled_event("Inv1", "D1"))
        assert (await client.post(HOOK, content=payload, headers={"BTCPay-Sig": sign(payload)})).status_code == 403
