"""/billing: mock top-ups (same amounts as the API), the paginated ledger, CSRF refusal."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from tests.support.control_plane import ctx
from tests.support.web import text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]


async def _balance(app: Starlette, user_id: str) -> int:
    from gateway.accounts import require_member

    async with ctx(app).sessions() as session:
        return (await require_member(session, user_id)).account.balance_pico


async def test_topup_buttons_add_exactly_and_show_in_the_ledger(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    page = text_of(await client.get("/billing"))
    for amount in (10, 25, 50, 100, 500):
        assert f"Add ${amount}" in page
    assert "Plan free" in page and "$1.00 included credits" in page
    response = await client.post("/billing/topup", data={"csrf_token": user.csrf, "amount_usd": "25"})
    assert (response.status_code, response.headers["location"]) == (303, "/billing?added=25")
    page = text_of(await client.get(response.headers["location"]))
    assert "Added $25.00 to your balance." in page and "Balance $26.00" in page
    assert "topup +$25.00 $26.00 top-up 25.00 USD (mock)" in page
    assert await _balance(app, user.user_id) == 26 * 10**12


async def test_other_amounts_are_refused_like_the_api(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    for amount in ("11", "10.01", "-10", "", "1e18"):
        response = await client.post("/billing/topup", data={"csrf_token": user.csrf, "amount_usd": amount})
        assert response.status_code == 400, amount
        assert "amount_usd must be one of 10, 25, 50, 100, 500" in response.text
    assert await _balance(app, user.user_id) == 10**12


async def test_a_cross_site_topup_changes_nothing(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    response = await client.post("/billing/topup", data={"amount_usd": "500"},
                                 headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    response = await client.post("/billing/topup", data={"amount_usd": "500"})
    assert response.status_code == 403
    assert await _balance(app, user.user_id) == 10**12
    assert user.csrf  # the token exists; it just was not sent


async def test_the_ledger_is_paginated(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    for _ in range(21):
        await client.post("/billing/topup", data={"csrf_token": user.csrf, "amount_usd": "10"})
    first = text_of(await client.get("/billing"))
    assert "22 entries" in first and "Page 1 of 2" in first and "grant" not in first.split("Ledger")[1]
    second = text_of(await client.get("/billing?page=2"))
    assert "Page 2 of 2" in second and "grant +$1.00 $1.00 free plan included credits" in second
    assert (await client.get("/billing?page=0")).status_code == 400
