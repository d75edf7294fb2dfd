"""Fixtures for the payment tests: a fake Stripe on loopback and a gateway selling through it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.db.models import Account, CreditTransaction, WebhookEvent
from gateway.settings import Settings
from tests.support.control_plane import Login, account_id, ctx, signup
from tests.support.fake_stripe import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, signed
from tests.support.running import running
from tests.support.servers import serve_app

WEBHOOK = "/api/billing/stripe/webhook"


@dataclass
class Till:
    app: Starlette
    client: httpx.AsyncClient
    stripe: FakeStripe
    buyer: Login
    account_id: str

    async def checkout(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/api/billing/checkout", headers=self.buyer.headers,
                                          json=body or {"amount_usd": "25"})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def deliver(self, body: dict[str, Any], *, secret: str = WEBHOOK_SECRET) -> httpx.Response:
        payload, header = signed(body, secret)
        return await self.client.post(WEBHOOK, content=payload,
                                      headers={"Stripe-Signature": header, "Content-Type": "application/json"})

    async def balance(self) -> int:
        """The balance, after checking that the ledger sums to it and to the trial bucket."""
        async with ctx(self.app).sessions() as session:
            account = await session.get(Account, self.account_id, populate_existing=True)
            assert account is not None
            total, trial = (await session.execute(
                sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0),
                          sa.func.coalesce(sa.func.sum(CreditTransaction.trial_pico), 0))
                .where(CreditTransaction.account_id == self.account_id))).one()
        assert (account.balance_pico, account.trial_pico) == (total, trial), "the ledger sums to both buckets"
        return account.balance_pico

    async def events(self) -> list[tuple[str, str, str]]:
        async with ctx(self.app).sessions() as session:
            rows = await session.execute(sa.select(WebhookEvent.event_id, WebhookEvent.type, WebhookEvent.outcome)
                                         .order_by(WebhookEvent.id))
            return [tuple(row) for row in rows.all()]  # type: ignore[misc]


@pytest.fixture
def fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    with serve_app(fake.app()) as url:
        yield fake, url


@pytest.fixture
async def till(make_settings: Callable[..., Settings], database_url: str,
               fake_stripe: tuple[FakeStripe, str]) -> AsyncIterator[Till]:
    fake, url = fake_stripe
    settings = make_settings(DATABASE_URL=database_url, PAYMENT_PROVIDERS="stripe", STRIPE_SECRET_KEY=SECRET_KEY,
                             STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET, STRIPE_API_BASE=url,
                             PUBLIC_BASE_URL="https://router.example.com")
    async with running(settings) as (app, client):
        buyer = await signup(client)
        yield Till(app, client, fake, buyer, await account_id(app, buyer))


