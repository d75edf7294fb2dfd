"""Redemption codes: admin batches (JSON and CSV), hashed at rest, single use, expiry, throttled guessing."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.billing.redemption import normalise
from gateway.db.models import Account, CreditTransaction, RedemptionCode
from tests.conftest import envelope
from tests.support.control_plane import Login, account_id, ctx, make_admin, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]
URL = "/api/admin/redemption-codes"


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


async def _batch(client: httpx.AsyncClient, admin: Login, **body: object) -> list[str]:
    response = await client.post(URL, headers=admin.headers,
                                 json={"count": 3, "amount_usd": "5", "reason": "workshop", **body})
    assert response.status_code == 201, response.text
    return list(response.json()["codes"])


async def _ledger_matches(app: Starlette, account: str) -> int:
    async with ctx(app).sessions() as session:
        balance = (await session.get(Account, account, populate_existing=True)).balance_pico  # type: ignore[union-attr]
        total = await session.scalar(sa.select(sa.func.sum(CreditTransaction.amount_pico))
                                     .where(CreditTransaction.account_id == account))
    assert balance == total
    return balance


async def test_batch_is_redeemed_once_each_with_a_ledger_row(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    codes = await _batch(client, admin)
    assert len(set(codes)) == 3 and all(code.startswith("PR-") and len(code) == 26 for code in codes)
    user = await signup(client)
    redeemed = await client.post("/api/billing/redeem", headers=user.headers, json={"code": codes[0].lower()})
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["balance_usd"] == "6.00"
    again = await client.post("/api/billing/redeem", headers=user.headers, json={"code": codes[0]})
    assert again.status_code == 400 and envelope(again)["code"] == "invalid_code"
    other = await signup(client)
    assert (await client.post("/api/billing/redeem", headers=other.headers,
                              json={"code": codes[0]})).status_code == 400
    spaced = codes[1].replace("-", " ")
    assert (await client.post("/api/billing/redeem", headers=other.headers, json={"code": spaced})).status_code == 200
    ledger = (await client.get("/api/billing/transactions", headers=user.headers)).json()["items"]
    assert (ledger[0]["kind"], ledger[0]["amount_usd"]) == ("redeem", "5.00")
    assert await _ledger_matches(app, await account_id(app, user)) == 6 * 10**12
    async with ctx(app).sessions() as session:  # only hashes at rest
        hashes = (await session.execute(sa.select(RedemptionCode.code_hash))).scalars().all()
    assert not any(normalise(code) in stored or code in stored for code in codes for stored in hashes)
    listed = (await client.get(URL, headers=admin.headers)).json()
    assert listed["total"] == 3 and sum(1 for item in listed["items"] if item["redeemed_at"]) == 2
    assert listed["items"][0]["reason"] == "workshop"


async def test_csv_export(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    response = await client.post(URL, headers=admin.headers, json={
        "count": 4, "amount_usd": "2.50", "reason": "hackathon", "format": "csv",
        "expires_at": expires.isoformat()})
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 4 and {row["amount_usd"] for row in rows} == {"2.50"}
    assert {row["expires_at"] for row in rows} == {expires.replace(tzinfo=None).isoformat() + ".000000Z"}
    user = await signup(client)
    ok = await client.post("/api/billing/redeem", headers=user.headers, json={"code": rows[2]["code"]})
    assert ok.json()["balance_usd"] == "3.50"


async def test_expired_codes_are_refused(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    codes = await _batch(client, admin, expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    async with ctx(app).sessions() as session:
        await session.execute(sa.update(RedemptionCode).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await session.commit()
    user = await signup(client)
    response = await client.post("/api/billing/redeem", headers=user.headers, json={"code": codes[0]})
    assert response.status_code == 400 and envelope(response)["code"] == "invalid_code"


async def test_concurrent_redemptions_of_one_code_pay_once(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    code = (await _batch(client, admin, count=1))[0]
    users = [await signup(client) for _ in range(5)]
    answers = await asyncio.gather(*(client.post("/api/billing/redeem", headers=user.headers, json={"code": code})
                                     for user in users))
    assert sorted(answer.status_code for answer in answers) == [200, 400, 400, 400, 400]


async def test_guessing_is_throttled(api: App) -> None:
    app, client = api
    user = await signup(client)
    for attempt in range(10):
        response = await client.post("/api/billing/redeem", headers=user.headers,
                                     json={"code": f"PR-AAAAA-AAAAA-AAAAA-AAAA{attempt}"})
        assert response.status_code == 400
    blocked = await client.post("/api/billing/redeem", headers=user.headers, json={"code": "PR-BBBBB"})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert envelope(blocked)["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("body, param", [
    ({"count": 0, "amount_usd": "5", "reason": "r"}, "count"),
    ({"count": 1001, "amount_usd": "5", "reason": "r"}, "count"),
    ({"count": 1, "amount_usd": "0", "reason": "r"}, "amount_usd"),
    ({"count": 1, "amount_usd": "1e18", "reason": "r"}, "amount_usd"),
    ({"count": 1, "amount_usd": "5"}, "reason"),
    ({"count": 1, "amount_usd": "5", "reason": "  "}, "reason"),
    ({"count": 1, "amount_usd": "5", "reason": "r", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"count": 1, "amount_usd": "5", "reason": "r", "expires_at": "9999-12-31T23:59:59-01:00"}, "expires_at"),
    ({"count": 1, "amount_usd": "5", "reason": "r", "format": "xml"}, "format"),
])
async def test_batch_validation(api: App, body: dict[str, object], param: str) -> None:
    app, client = api
    admin = await make_admin(app, client)
    response = await client.post(URL, headers=admin.headers, json=body)
    assert response.status_code == 400, response.text
    assert envelope(response)["param"] == param


async def test_only_admins_make_codes_and_redeem_needs_a_code(api: App) -> None:
    _, client = api
    user = await signup(client)
    assert (await client.post(URL, headers=user.headers, json={})).status_code == 403
    for body in ({}, {"code": 5}, {"code": " "}):
        response = await client.post("/api/billing/redeem", headers=user.headers, json=body)
        assert response.status_code == 400 and envelope(response)["param"] == "code"
