"""Paid plans through Stripe subscriptions: checkout, invoice.paid (once per invoice), cancellation."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from gateway.db.models import Account, Subscription
from gateway.registry import RegistryError, parse
from tests.conftest import MODELS_FILE, envelope
from tests.gateway.billing.conftest import Till
from tests.support.control_plane import ctx, make_admin
from tests.support.fake_stripe import event, invoice_paid, subscription_event

USD = 10**12


def _sell_pro(till: Till) -> None:
    holder = ctx(till.app).registry
    text = holder.path.read_text().replace('  - name: pro\n    monthly_usd: "20"\n',
                                           '  - name: pro\n    monthly_usd: "20"\n    stripe_price_id: price_Pro20\n')
    assert "price_Pro20" in text
    holder.swap(parse(text))


async def _plan(till: Till) -> str:
    async with ctx(till.app).sessions() as session:
        account = await session.get(Account, till.account_id, populate_existing=True)
        assert account is not None
        return account.plan_name


async def _subscribe(till: Till) -> dict[str, Any]:
    response = await till.client.post("/api/billing/subscribe", headers=till.buyer.headers, json={"plan": "pro"})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_subscribe_opens_a_subscription_checkout(till: Till) -> None:
    _sell_pro(till)
    link = await _subscribe(till)
    sent = till.stripe.requests[0]
    assert (sent["mode"], sent["line_items[0][price]"], sent["client_reference_id"]) == \
        ("subscription", "price_Pro20", till.account_id)
    assert till.stripe.sessions[link["session_id"]]["subscription_metadata"] == {"account_id": till.account_id,
                                                                                 "plan": "pro"}
    assert await _plan(till) == "free"  # nothing changes before Stripe says the invoice is paid


async def test_subscribe_refusals(till: Till) -> None:
    for body in ({"plan": "pro"}, {"plan": "nope"}, {}):  # pro is not sold until it has a price
        response = await till.client.post("/api/billing/subscribe", headers=till.buyer.headers, json=body)
        assert response.status_code == 400 and envelope(response)["param"] == "plan"
    _sell_pro(till)
    metadata = {"account_id": till.account_id, "plan": "pro"}
    await till.deliver(invoice_paid("evt_1", invoice_id="in_1", subscription="sub_1", metadata=metadata))
    again = await till.client.post("/api/billing/subscribe", headers=till.buyer.headers, json={"plan": "pro"})
    assert again.status_code == 409 and envelope(again)["code"] == "subscription_exists"


async def test_invoice_paid_moves_to_the_plan_and_grants_credits_once_per_invoice(till: Till) -> None:
    _sell_pro(till)
    await _subscribe(till)
    metadata = {"account_id": till.account_id, "plan": "pro"}
    completed = event("evt_c", "checkout.session.completed", {
        "id": "cs_x", "mode": "subscription", "subscription": "sub_1", "client_reference_id": till.account_id,
        "metadata": metadata, "payment_status": "paid"})
    assert (await till.deliver(completed)).json()["outcome"] == "subscription_started"
    first = await till.deliver(invoice_paid("evt_i1", invoice_id="in_1", subscription="sub_1", metadata=metadata))
    assert first.json()["outcome"] == "plan_paid"
    assert await _plan(till) == "pro" and await till.balance() == 26 * USD
    assert (await till.deliver(invoice_paid("evt_i1", invoice_id="in_1", subscription="sub_1",
                                            metadata=metadata))).json()["outcome"] == "duplicate"
    other_event = invoice_paid("evt_i1b", invoice_id="in_1", subscription="sub_1", metadata=metadata)
    assert (await till.deliver(other_event)).json()["outcome"] == "already_credited"
    renewal = await till.deliver(invoice_paid("evt_i2", invoice_id="in_2", subscription="sub_1", metadata=metadata))
    assert renewal.json()["outcome"] == "plan_paid" and await till.balance() == 51 * USD
    ledger = (await till.client.get("/api/billing/transactions", headers=till.buyer.headers)).json()["items"]
    assert ledger[0]["kind"] == "grant" and "in_2" in ledger[0]["note"]


async def test_invoice_paid_before_checkout_completed_still_works(till: Till) -> None:
    _sell_pro(till)
    metadata = {"account_id": till.account_id, "plan": "pro"}
    assert (await till.deliver(invoice_paid("evt_i", invoice_id="in_9", subscription="sub_9",
                                            metadata=metadata))).json()["outcome"] == "plan_paid"
    assert await _plan(till) == "pro"
    async with ctx(till.app).sessions() as session:
        stored = await session.get(Subscription, "sub_9")
    assert stored is not None and (stored.account_id, stored.status) == (till.account_id, "active")


@pytest.mark.parametrize("ending", [("customer.subscription.deleted", "canceled"),
                                    ("customer.subscription.updated", "unpaid"),
                                    ("customer.subscription.updated", "canceled")])
async def test_cancellation_or_failed_payment_returns_to_free(till: Till, ending: tuple[str, str]) -> None:
    _sell_pro(till)
    metadata = {"account_id": till.account_id, "plan": "pro"}
    await till.deliver(invoice_paid("evt_i", invoice_id="in_1", subscription="sub_1", metadata=metadata))
    past_due = await till.deliver(subscription_event("evt_pd", "customer.subscription.updated", "sub_1", "past_due"))
    assert past_due.json()["outcome"] == "subscription_updated" and await _plan(till) == "pro"  # Stripe still retries
    type, status = ending
    ended = await till.deliver(subscription_event("evt_end", type, "sub_1", status))
    assert ended.json()["outcome"] == "plan_ended"
    assert await _plan(till) == "free"
    assert await till.balance() == 26 * USD  # credits already granted stay


async def test_an_admin_plan_change_is_not_undone_by_the_old_subscription_ending(till: Till) -> None:
    _sell_pro(till)
    metadata = {"account_id": till.account_id, "plan": "pro"}
    await till.deliver(invoice_paid("evt_i", invoice_id="in_1", subscription="sub_1", metadata=metadata))
    admin = await make_admin(till.app, till.client)
    moved = await till.client.post(f"/api/admin/users/{till.buyer.user_id}/plan", headers=admin.headers,
                                   json={"plan": "team"})
    assert moved.status_code == 200
    await till.deliver(subscription_event("evt_end", "customer.subscription.deleted", "sub_1", "canceled"))
    assert await _plan(till) == "team"


async def test_foreign_or_malformed_subscription_events_change_nothing(till: Till) -> None:
    _sell_pro(till)
    stranger = await till.deliver(invoice_paid("evt_1", invoice_id="in_1", subscription="sub_x",
                                               metadata={"account_id": "nobody", "plan": "pro"}))
    assert stranger.json()["outcome"] == "unknown_subscription"
    wrong_currency = await till.deliver(invoice_paid("evt_2", invoice_id="in_2", subscription="sub_x",
                                                     metadata={"account_id": till.account_id, "plan": "pro"},
                                                     currency="eur"))
    assert wrong_currency.json()["outcome"] == "amount_mismatch"
    unknown_end = await till.deliver(subscription_event("evt_3", "customer.subscription.deleted", "sub_y",
                                                        "canceled"))
    assert unknown_end.json()["outcome"] == "unknown_subscription"
    assert await _plan(till) == "free" and await till.balance() == USD
    async with ctx(till.app).sessions() as session:
        assert await session.scalar(sa.select(sa.func.count()).select_from(Subscription)) == 0


@pytest.mark.parametrize("price, message", [("prod_1", "must be a Stripe price id"), (5, "must be a Stripe price")])
def test_stripe_price_id_is_validated(price: object, message: str) -> None:
    text = MODELS_FILE.read_text().replace('  - name: pro\n    monthly_usd: "20"\n',
                                           f'  - name: pro\n    monthly_usd: "20"\n    stripe_price_id: {price}\n')
    with pytest.raises(RegistryError, match=message):
        parse(text)
    free = MODELS_FILE.read_text().replace('  - name: free\n', '  - name: free\n    stripe_price_id: price_1\n')
    with pytest.raises(RegistryError, match="the free plan cannot be sold"):
        parse(free)


async def test_a_zero_invoice_moves_the_plan_but_grants_no_credits(till: Till) -> None:
    _sell_pro(till)
    metadata = {"account_id": till.account_id, "plan": "pro"}
    free_month = await till.deliver(invoice_paid("evt_0", invoice_id="in_0", subscription="sub_1", metadata=metadata,
                                                 amount_paid=0))
    assert free_month.json()["outcome"] == "plan_paid"
    assert await _plan(till) == "pro" and await till.balance() == USD
