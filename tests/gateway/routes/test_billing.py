from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import envelope
from tests.support.control_plane import signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


async def test_new_account_has_the_free_plan_credits(api: App) -> None:
    _, client = api
    login = await signup(client)
    response = await client.get("/api/billing/balance", headers=login.headers)
    assert response.status_code == 200
    assert response.json() == {"balance_usd": "1.00", "held_usd": "0.00", "available_usd": "1.00",
                               "paid_usd": "1.00", "trial_usd": "0.00", "trial_expires_at": None,
                               "plan_name": "free", "monthly_quota_tokens": None}


async def test_topup_adds_exact_amounts_and_ledger_lists_newest_first(api: App) -> None:
    _, client = api
    login = await signup(client)
    balances = []
    for amount in (10, "25", "50.00", 100, "500"):
        response = await client.post("/api/billing/topup", headers=login.headers, json={"amount_usd": amount})
        assert response.status_code == 200, response.text
        balances.append(response.json()["balance_usd"])
    assert balances == ["11.00", "36.00", "86.00", "186.00", "686.00"]
    assert response.json()["available_usd"] == "686.00" and response.json()["plan_name"] == "free"

    page = (await client.get("/api/billing/transactions", headers=login.headers)).json()
    assert (page["total"], page["limit"], page["offset"]) == (6, 20, 0)
    first = page["items"][0]
    assert set(first) == {"id", "kind", "amount_usd", "balance_after_usd", "note", "request_id", "created_at"}
    assert (first["kind"], first["amount_usd"], first["balance_after_usd"]) == ("topup", "500.00", "686.00")
    assert first["created_at"].endswith("Z")
    assert [item["kind"] for item in page["items"]] == ["topup"] * 5 + ["grant"]
    assert page["items"][-1]["amount_usd"] == "1.00"

    second = (await client.get("/api/billing/transactions?limit=2&offset=2", headers=login.headers)).json()
    assert [item["id"] for item in second["items"]] == [item["id"] for item in page["items"][2:4]]
    assert (second["total"], second["limit"], second["offset"]) == (6, 2, 2)


async def test_topup_refuses_any_other_amount(api: App) -> None:
    _, client = api
    login = await signup(client)
    for body in [{"amount_usd": 11}, {"amount_usd": "10.01"}, {"amount_usd": 10.0}, {"amount_usd": -10},
                 {"amount_usd": True}, {"amount_usd": "ten"}, {"amount_usd": None}, {"amount_usd": "NaN"}, {}]:
        response = await client.post("/api/billing/topup", headers=login.headers, json=body)
        assert response.status_code == 400, body
        error = envelope(response)
        assert (error["code"], error["param"]) == ("invalid_body", "amount_usd")
        assert "10, 25, 50, 100, 500" in error["message"]
    assert (await client.get("/api/billing/balance", headers=login.headers)).json()["balance_usd"] == "1.00"


async def test_transactions_paging_is_validated(api: App) -> None:
    _, client = api
    login = await signup(client)
    for query, param in [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("offset=-1", "offset")]:
        response = await client.get(f"/api/billing/transactions?{query}", headers=login.headers)
        assert response.status_code == 400
        assert envelope(response)["param"] == param


async def test_concurrent_topups_lose_no_update(api: App) -> None:
    _, client = api
    login = await signup(client)
    responses = await asyncio.gather(*(client.post("/api/billing/topup", headers=login.headers,
                                                   json={"amount_usd": 10}) for _ in range(12)))
    assert all(response.status_code == 200 for response in responses)
    assert (await client.get("/api/billing/balance", headers=login.headers)).json()["balance_usd"] == "121.00"
    page = (await client.get("/api/billing/transactions?limit=100", headers=login.headers)).json()
    assert page["total"] == 13
    assert sorted(item["balance_after_usd"] for item in page["items"] if item["kind"] == "topup") == sorted(
        f"{11 + 10 * n}.00" for n in range(12))
