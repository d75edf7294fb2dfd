"""A balance taken below zero by a payment reversal: /v1 answers 402 until a top-up covers the debt."""

from __future__ import annotations

import httpx

from gateway.billing import ledger
from gateway.billing.money import to_pico
from gateway.db.engine import session_factory
from tests.support.stack import Stack


async def test_a_negative_account_gets_402_until_topped_up(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1", plan="team")
    async with session_factory(stack.engine)() as session:  # a refund of $3 of credit already spent
        await ledger.post(session, account_id=tenant.account_id, kind="reversal", amount_pico=-to_pico(3),
                          allow_negative=True, note="Stripe refund")
        await session.commit()
    body = {"model": "privaterouter/fast", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
        refused = await client.post("/chat/completions", json=body)
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["code"] == "insufficient_credits"
        await stack.grant(tenant.account_id, to_pico("1.50"))  # balance -$0.50: still refused
        assert (await client.post("/chat/completions", json=body)).status_code == 402
        await stack.grant(tenant.account_id, to_pico(1))
        assert (await client.post("/chat/completions", json=body)).status_code == 200
    await stack.settled(tenant.account_id, 1)
    account = await stack.account(tenant.account_id)
    assert account.balance_pico == await stack.ledger_sum(tenant.account_id)
    assert 0 < account.balance_pico < to_pico("0.50")
