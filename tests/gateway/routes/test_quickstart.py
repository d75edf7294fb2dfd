"""Seed 000's walk-through, step by step: signup -> login -> me -> top-up -> key -> usage -> balance."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from tests.support.control_plane import Login, ctx, record_usage, use_cheap_passwords

ALICE = {"email": "alice@example.com", "password": "correct-horse-battery-staple", "name": "Alice"}


async def test_seed_000_walk_through(app_client: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = app_client
    use_cheap_passwords(app)

    # Step 2: sign up (the cookie is set too), then log in for a token.
    signed_up = await client.post("/api/auth/signup", json=ALICE)
    assert signed_up.status_code == 201
    assert signed_up.json()["token_type"] == "bearer" and signed_up.json()["user"]["role"] == "user"
    assert "pr_session=" in signed_up.headers["set-cookie"]
    client.cookies.clear()
    login = await client.post("/api/auth/login", json={"email": ALICE["email"], "password": ALICE["password"]})
    token = login.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    me = (await client.get("/api/auth/me", headers=auth)).json()
    assert (me["email"], me["name"], me["status"]) == ("alice@example.com", "Alice", "active")

    # Step 3: top up $10 on top of the free plan's $1.00.
    topped = await client.post("/api/billing/topup", headers=auth, json={"amount_usd": 10})
    assert topped.json()["balance_usd"] == "11.00"
    assert topped.json()["plan_name"] == "free" and topped.json()["monthly_quota_tokens"] is None

    # Step 4: create a key; the secret is shown once.
    created = await client.post("/api/keys", headers=auth, json={"name": "laptop"})
    assert created.status_code == 201
    raw_key, api_key = created.json()["key"], created.json()["api_key"]
    assert raw_key.startswith("sk-pr-live-") and api_key["key_prefix"] == raw_key[:15]
    assert (api_key["name"], api_key["status"], api_key["last_used_at"]) == ("laptop", "active", None)

    # Step 5: what the data plane does for one request: resolve the key, record use, write the event.
    principal = await ctx(app).key_resolver.resolve(raw_key)
    assert principal is not None and principal.plan_name == "free"
    ctx(app).key_resolver.touch(principal.key_id)
    await record_usage(app, Login(user_id=principal.user_id, email=me["email"], token=token), key_id=principal.key_id,
                       input_tokens=14, output_tokens=9, cost_pico=14 * 100_000 + 9 * 300_000)

    # Step 7: inspect usage.
    usage = (await client.get("/api/usage?limit=20", headers=auth)).json()
    assert (usage["total"], usage["limit"], usage["offset"]) == (1, 20, 0)
    item = usage["items"][0]
    assert (item["model_public_name"], item["input_tokens"], item["output_tokens"], item["cost_usd"],
            item["status"]) == ("privaterouter/fast", 14, 9, "0.0000041", "success")

    # Balance updates land in /api/billing/balance.
    balance = (await client.get("/api/billing/balance", headers=auth)).json()
    assert balance["balance_usd"] == "10.9999959" and balance["available_usd"] == "10.9999959"
    keys = (await client.get("/api/keys", headers=auth)).json()["items"]
    assert keys[0]["last_used_at"] is not None
