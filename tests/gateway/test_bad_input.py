"""Bad input is a 400 (or 413) in the envelope on both backends, never a 500 (failing input 15).

The fixes are bounds at the parsing layer (gateway/fields.py, gateway/http.py,
gateway/middleware/input_guard.py, gateway/middleware/body_limit.py), not per-route special cases.
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import envelope
from tests.support.control_plane import PASSWORD, make_admin, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]
OVERFLOWING_TIME = "9999-12-31T23:59:59-01:00"


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


def _bad(response: httpx.Response, param: str | None = None, status: int = 400) -> None:
    assert response.status_code == status, response.text
    error = envelope(response)
    if param is not None:
        assert error["param"] == param, error


async def test_money_beyond_the_bounds_is_refused(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client)
    credits = f"/api/admin/users/{user.user_id}/credits"
    for amount in ("1e18", "9300000", "-1e30", "1" + "0" * 60, 10**30):
        _bad(await client.post(credits, json={"amount_usd": amount}, headers=admin.headers), "amount_usd")
    _bad(await client.post("/api/keys", json={"name": "k", "monthly_limit_usd": "1e18"}, headers=user.headers),
         "monthly_limit_usd")


async def test_a_balance_cannot_grow_past_bigint(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client)
    credits = f"/api/admin/users/{user.user_id}/credits"
    grant = {"amount_usd": "1000000", "reason": "test"}
    statuses = [(await client.post(credits, json=grant, headers=admin.headers)).status_code
                for _ in range(10)]
    assert statuses == [200] * 9 + [400], statuses  # 2^63 pico-USD is about 9.22 million USD
    balance = await client.get("/api/billing/balance", headers=user.headers)
    assert balance.json()["balance_usd"] == "9000001.00"


async def test_times_that_overflow_are_refused(api: App) -> None:
    _, client = api
    user = await signup(client)
    _bad(await client.post("/api/keys", json={"name": "k", "expires_at": OVERFLOWING_TIME}, headers=user.headers),
         "expires_at")
    for param in ("since", "until"):
        _bad(await client.get("/api/usage", params={param: OVERFLOWING_TIME}, headers=user.headers), param)
        _bad(await client.get("/api/usage/summary", params={param: "0001-01-01T00:00:00+01:00"},
                              headers=user.headers), param)


async def test_huge_offsets_and_limits_are_refused(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    for path, headers in [("/api/usage", admin.headers), ("/api/billing/transactions", admin.headers),
                          ("/api/admin/users", admin.headers)]:
        for value in (str(10**20), "9" * 5000):
            _bad(await client.get(path, params={"offset": value}, headers=headers), "offset")
        assert (await client.get(path, params={"offset": str(2**31 - 1)}, headers=headers)).status_code == 200


async def test_nul_characters_are_refused_everywhere(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client)
    _bad(await client.post("/api/auth/signup", json={"email": "n@example.com", "password": PASSWORD,
                                                     "name": "\u0000"}), "name")
    _bad(await client.post("/api/auth/signup", json={"email": "n\u0000@example.com", "password": PASSWORD}),
         "email")
    _bad(await client.post("/api/keys", json={"name": "a\u0000b"}, headers=user.headers), "name")
    _bad(await client.post("/api/keys", json={"name": "k", "allowed_models": ["\u0000"]}, headers=user.headers),
         "allowed_models[0]")
    for path in ("/api/keys/%00", "/api/admin/users/%00", "/api/admin/users/a%00b/credits", "/v1/models/%00"):
        method = "PATCH" if path.startswith("/api/keys") else "GET"
        if path.endswith("credits"):
            method = "POST"
        headers = admin.headers if "/admin/" in path else user.headers
        _bad(await client.request(method, path, json={"name": "x", "amount_usd": "1"}, headers=headers))
    for path, params in [("/api/usage", {"model": "\u0000"}), ("/api/admin/users", {"q": "x\u0000"}),
                         ("/api/usage", {"status": "\u0000"})]:
        _bad(await client.get(path, params=params, headers=admin.headers))


async def test_unauthenticated_routes_read_a_small_body(api: App) -> None:
    _, client = api
    padding = "x" * (64 * 1024)
    _bad(await client.post("/api/auth/login", json={"email": "a@example.com", "password": "p", "pad": padding}),
         status=413)
    _bad(await client.post("/api/auth/signup", content=b"{" + b" " * (70 * 1024) + b"}",
                           headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}), status=413)
    small = await client.post("/api/auth/login", json={"email": "a@example.com", "password": "bad-password"})
    assert small.status_code == 401
