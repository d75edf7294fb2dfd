"""Stripe: checkout through the real SDK against a fake Stripe on loopback; signed webhooks credited once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.billing.holds import HoldRefused, Quote, place_hold
from gateway.db.models import Payment
from gateway.settings import Settings
from tests.conftest import envelope
from tests.gateway.billing.conftest import Till
from tests.support.control_plane import ctx, make_admin, signup
from tests.support.fake_stripe import WEBHOOK_SECRET, event, signature, signed
from tests.support.metrics import Scrape
from tests.support.running import running

WEBHOOK = "/api/billing/stripe/webhook"


USD = 10**12


async def test_checkout_creates_a_session_through_the_sdk(till: Till) -> None:
    link = await till.checkout(amount_usd="25")
    assert link["checkout_url"] == f"https://checkout.stripe.com/c/pay/{link['session_id']}"
    sent = till.stripe.requests[0]
    assert sent["mode"] == "payment" and sent["client_reference_id"] == till.account_id
    assert (sent["line_items[0][price_data][unit_amount]"], sent["line_items[0][price_data][currency]"]) == \
        ("2500", "usd")
    assert sent["metadata[payment_id]"] == link["payment_id"]
    assert sent["success_url"].startswith("https://router.example.com/billing?checkout=success")
    assert till.stripe.headers[0]["idempotency-key"] == link["payment_id"]
    async with ctx(till.app).sessions() as session:
        payment = await session.get(Payment, link["payment_id"])
    assert payment is not None
    assert (payment.status, payment.provider_ref, payment.amount_minor, payment.credit_pico) == \
        ("pending", link["session_id"], 2500, 25 * USD)
    assert await till.balance() == 1 * USD  # nothing credited before Stripe says it is paid


async def test_checkout_refusals(till: Till, make_settings: Callable[..., Settings], database_url: str) -> None:
    bad = await till.client.post("/api/billing/checkout", headers=till.buyer.headers, json={"amount_usd": "26"})
    assert bad.status_code == 400 and envelope(bad)["param"] == "amount_usd"
    mock = await till.client.post("/api/billing/topup", headers=till.buyer.headers, json={"amount_usd": "25"})
    assert mock.status_code == 403 and envelope(mock)["code"] == "payments_disabled"
    till.stripe.fail_with = 500
    failed = await till.client.post("/api/billing/checkout", headers=till.buyer.headers, json={"amount_usd": "10"})
    assert failed.status_code == 502 and envelope(failed)["code"] == "payment_provider_error"
    async with ctx(till.app).sessions() as session:
        statuses = (await session.execute(sa.select(Payment.status))).scalars().all()
    assert statuses == ["failed"]  # never credited, whatever arrives later
    anonymous = await till.client.post("/api/billing/checkout", json={"amount_usd": "10"})
    assert anonymous.status_code == 401


async def test_checkout_and_webhook_refused_without_stripe(make_settings: Callable[..., Settings],
                                                          database_url: str) -> None:
    async with running(make_settings(DATABASE_URL=database_url, PAYMENT_PROVIDERS="mock")) as (_, client):
        buyer = await signup(client)
        response = await client.post("/api/billing/checkout", headers=buyer.headers, json={"amount_usd": "10"})
        assert response.status_code == 403 and envelope(response)["code"] == "payments_disabled"
        payload, header = signed(event("evt_1", "checkout.session.completed", {}))
        hook = await client.post(WEBHOOK, content=payload, headers={"Stripe-Signature": header})
        assert hook.status_code == 403


async def test_paid_session_is_credited_once_replays_are_not(till: Till) -> None:
    link = await till.checkout(amount_usd="25")
    paid = till.stripe.completed(link["session_id"], event_id="evt_paid")
    first = await till.deliver(paid)
    assert first.status_code == 200 and first.json() == {"received": True, "outcome": "credited"}
    assert await till.balance() == 26 * USD
    scraped = Scrape.parse(ctx(till.app).metrics.render()[0])
    assert scraped.value("pr_credit_transactions_total", kind="topup") == 1
    replay = await till.deliver(paid)
    assert replay.json()["outcome"] == "duplicate"
    other_event = till.stripe.completed(link["session_id"], event_id="evt_again",
                                        type="checkout.session.async_payment_succeeded")
    assert (await till.deliver(other_event)).json()["outcome"] == "already_credited"
    assert await till.balance() == 26 * USD
    scraped = Scrape.parse(ctx(till.app).metrics.render()[0])
    assert scraped.value("pr_credit_transactions_total", kind="topup") == 1  # replays count nothing
    assert await till.events() == [("evt_paid", "checkout.session.completed", "credited"),
                                   ("evt_again", "checkout.session.async_payment_succeeded", "already_credited")]
    ledger = (await till.client.get("/api/billing/transactions", headers=till.buyer.headers)).json()["items"]
    assert (ledger[0]["kind"], ledger[0]["amount_usd"]) == ("topup", "25.00")
    admin = await make_admin(till.app, till.client)
    audit = (await till.client.get("/api/admin/webhook-events?provider=stripe", headers=admin.headers)).json()
    assert [(item["event_id"], item["outcome"], item["account_id"]) for item in audit["items"]] == [
        ("evt_again", "already_credited", till.account_id), ("evt_paid", "credited", till.account_id)]


async def test_async_payment_credits_when_it_succeeds(till: Till) -> None:
    link = await till.checkout(amount_usd="10")
    pending = till.stripe.completed(link["session_id"], event_id="evt_1", payment_status="unpaid")
    assert (await till.deliver(pending)).json()["outcome"] == "awaiting_payment"
    assert await till.balance() == 1 * USD
    succeeded = till.stripe.completed(link["session_id"], event_id="evt_2",
                                      type="checkout.session.async_payment_succeeded")
    assert (await till.deliver(succeeded)).json()["outcome"] == "credited"
    assert await till.balance() == 11 * USD


@pytest.mark.parametrize("tamper", ["body", "secret", "missing", "old", "garbage"])
async def test_bad_signatures_are_400_and_credit_nothing(till: Till, tamper: str) -> None:
    link = await till.checkout(amount_usd="25")
    payload, header = signed(till.stripe.completed(link["session_id"], event_id="evt_x"))
    headers = {"Stripe-Signature": header}
    if tamper == "body":
        payload = payload.replace(b'"amount_total":2500', b'"amount_total":2501')
    elif tamper == "secret":
        headers["Stripe-Signature"] = signature(payload, "whsec_someone_else")
    elif tamper == "missing":
        headers = {}
    elif tamper == "old":
        headers["Stripe-Signature"] = signature(payload, timestamp=1_000_000_000)
    else:
        headers["Stripe-Signature"] = "v1=deadbeef"
    response = await till.client.post(WEBHOOK, content=payload, headers=headers)
    assert response.status_code == 400
    assert envelope(response)["code"] == "invalid_signature"
    assert await till.balance() == 1 * USD
    assert await till.events() == []


@pytest.mark.parametrize("override", [{"amount_total": 2400}, {"currency": "eur"}])
async def test_amount_or_currency_mismatch_is_not_credited(till: Till, override: dict[str, Any]) -> None:
    link = await till.checkout(amount_usd="25")
    response = await till.deliver(till.stripe.completed(link["session_id"], event_id="evt_m", **override))
    assert response.status_code == 200 and response.json()["outcome"] == "amount_mismatch"
    assert await till.balance() == 1 * USD
    async with ctx(till.app).sessions() as session:
        payment = await session.get(Payment, link["payment_id"])
    assert payment is not None and payment.status == "mismatch"
    # A later, correct event for the same session does not credit a payment marked for review.
    again = await till.deliver(till.stripe.completed(link["session_id"], event_id="evt_m2"))
    assert again.json()["outcome"] == "already_credited" and await till.balance() == 1 * USD


async def test_unknown_session_and_other_events_are_stored_not_credited(till: Till) -> None:
    unknown = event("evt_u", "checkout.session.completed", {
        "id": "cs_test_not_ours", "mode": "payment", "payment_status": "paid", "amount_total": 2500,
        "currency": "usd", "client_reference_id": till.account_id, "metadata": {}})
    assert (await till.deliver(unknown)).json()["outcome"] == "unknown_session"
    assert (await till.deliver(event("evt_o", "customer.created", {"id": "cus_1"}))).json()["outcome"] == "ignored"
    assert await till.balance() == 1 * USD
    assert [outcome for _, _, outcome in await till.events()] == ["unknown_session", "ignored"]


async def test_concurrent_duplicate_deliveries_credit_once(till: Till) -> None:
    link = await till.checkout(amount_usd="100")
    same = till.stripe.completed(link["session_id"], event_id="evt_dup")
    answers = await asyncio.gather(*(till.deliver(same) for _ in range(8)))
    assert sorted(answer.json()["outcome"] for answer in answers) == ["credited"] + ["duplicate"] * 7
    other = await till.checkout(amount_usd="10")
    distinct = [till.stripe.completed(other["session_id"], event_id=f"evt_d{index}") for index in range(8)]
    answers = await asyncio.gather(*(till.deliver(body) for body in distinct))
    assert sorted(answer.json()["outcome"] for answer in answers) == ["already_credited"] * 7 + ["credited"]
    assert await till.balance() == 111 * USD


def _charge(payment_intent: str, amount: int, refunded: int) -> dict[str, Any]:
    return {"id": "ch_1", "object": "charge", "amount": amount, "amount_refunded": refunded, "currency": "usd",
            "payment_intent": payment_intent, "refunded": refunded == amount}


async def test_refunds_take_back_credit_once_even_below_zero(till: Till) -> None:
    link = await till.checkout(amount_usd="50")
    await till.deliver(till.stripe.completed(link["session_id"], event_id="evt_p", payment_intent="pi_9"))
    assert await till.balance() == 51 * USD
    partial = await till.deliver(event("evt_r1", "charge.refunded", _charge("pi_9", 5000, 1000)))
    assert partial.json()["outcome"] == "reversed" and await till.balance() == 41 * USD
    assert (await till.deliver(event("evt_r1", "charge.refunded", _charge("pi_9", 5000, 1000)))).json()["outcome"] \
        == "duplicate"
    # The buyer spends most of it, then the rest of the charge is refunded: the balance goes negative.
    async with ctx(till.app).sessions() as session:
        from gateway.billing import ledger
        await ledger.post(session, account_id=till.account_id, kind="usage", amount_pico=-40 * USD)
        await session.commit()
    full = await till.deliver(event("evt_r2", "charge.refunded", _charge("pi_9", 5000, 5000)))
    assert full.json()["outcome"] == "reversed"
    assert await till.balance() == -39 * USD
    again = await till.deliver(event("evt_r3", "charge.refunded", _charge("pi_9", 5000, 5000)))
    assert again.json()["outcome"] == "nothing_to_reverse" and await till.balance() == -39 * USD
    ledger_rows = (await till.client.get("/api/billing/transactions", headers=till.buyer.headers)).json()["items"]
    assert (ledger_rows[0]["kind"], ledger_rows[0]["amount_usd"], ledger_rows[0]["balance_after_usd"]) == \
        ("reversal", "-40.00", "-39.00")
    # A negative account is refused (402 insufficient_credits on /v1) until it is topped up.
    async with ctx(till.app).sessions() as session:
        with pytest.raises(HoldRefused):
            await place_hold(session, request_id="r1", account_id=till.account_id, key_id=None, key_has_limit=False,
                             quote=Quote(prompt_pico=1000, output_pico_per_token=10, max_output_tokens=10))


async def test_lost_dispute_takes_back_credit_won_one_does_not(till: Till) -> None:
    link = await till.checkout(amount_usd="25")
    await till.deliver(till.stripe.completed(link["session_id"], event_id="evt_p", payment_intent="pi_d"))
    dispute = {"id": "dp_1", "object": "dispute", "amount": 2500, "charge": "ch_1", "payment_intent": "pi_d",
               "currency": "usd", "status": "won"}
    assert (await till.deliver(event("evt_w", "charge.dispute.closed", dispute))).json()["outcome"] == "ignored"
    assert await till.balance() == 26 * USD
    lost = event("evt_l", "charge.dispute.closed", {**dispute, "id": "dp_2", "status": "lost"})
    assert (await till.deliver(lost)).json()["outcome"] == "reversed"
    assert await till.balance() == 1 * USD
    unknown = event("evt_l2", "charge.dispute.closed", {**dispute, "id": "dp_3", "status": "lost",
                                                         "payment_intent": "pi_other"})
    assert (await till.deliver(unknown)).json()["outcome"] == "unknown_charge"


async def test_pack_bonus_is_credited_and_reversed_in_proportion(till: Till) -> None:
    models = ctx(till.app).registry
    from gateway.registry import parse

    models.swap(parse(models.path.read_text() + "\nbilling:\n  packs:\n    - name: big\n      price_usd: \"100\"\n"
                      "      bonus_usd: \"10\"\n"))
    link = await till.checkout(pack="big")
    assert till.stripe.requests[0]["line_items[0][price_data][unit_amount]"] == "10000"
    await till.deliver(till.stripe.completed(link["session_id"], event_id="evt_p", payment_intent="pi_b"))
    assert await till.balance() == 111 * USD
    await till.deliver(event("evt_r", "charge.refunded", _charge("pi_b", 10000, 5000)))
    assert await till.balance() == 56 * USD  # half the price back = half of the 110 credited


def test_our_test_signatures_follow_the_sdk_scheme() -> None:
    import stripe

    payload = b'{"id":"evt_1"}'
    ours = signature(payload, timestamp=1_700_000_000)
    sdk = stripe.WebhookSignature.generate_signature_header(payload.decode(), WEBHOOK_SECRET, timestamp=1_700_000_000)
    assert ours == sdk
