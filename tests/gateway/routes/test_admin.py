from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.db.models import CreditTransaction
from gateway.settings import Settings
from tests.conftest import MODELS_FILE, envelope
from tests.support.control_plane import (
    Login,
    account_id,
    create_key,
    ctx,
    make_admin,
    record_usage,
    signup,
    use_cheap_passwords,
)

App = tuple[Starlette, httpx.AsyncClient]


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        yield app


def client_from(app: Starlette, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)),
                             base_url="http://testserver")


def _error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert (envelope(response)["code"], envelope(response)["param"]) == (code, param)


ADMIN_CALLS = [("GET", "/api/admin/users"), ("GET", "/api/admin/users/x"), ("POST", "/api/admin/users/x/credits"),
               ("POST", "/api/admin/users/x/plan"), ("POST", "/api/admin/users/x/disable"),
               ("POST", "/api/admin/users/x/enable"), ("GET", "/api/admin/stats"), ("GET", "/api/admin/nodes"),
               ("POST", "/api/admin/reload"), ("DELETE", "/api/admin/users/x"), ("POST", "/api/admin/users"),
               ("POST", "/api/admin/invites"), ("GET", "/api/admin/invites"), ("POST", "/api/admin/users/x/trial"),
               ("POST", "/api/admin/redemption-codes"), ("GET", "/api/admin/redemption-codes"),
               ("GET", "/api/admin/webhook-events")]


async def test_non_admins_are_forbidden(api: App) -> None:
    _, client = api
    user = await signup(client)
    for method, path in ADMIN_CALLS:
        _error(await client.request(method, path, headers=user.headers, json={}), 403, "forbidden")
        _error(await client.request(method, path, json={}), 401, "invalid_token")


async def test_outside_the_allowed_networks_admins_are_forbidden(make_settings: Callable[..., Settings],
                                                                 database_url: str) -> None:
    settings = make_settings(DATABASE_URL=database_url, ADMIN_ALLOWED_CIDRS="10.0.0.0/8, 192.168.1.0/24")
    async with started(settings) as app, client_from(app, "127.0.0.1") as outside, \
            client_from(app, "10.20.30.40") as inside:
        admin = await make_admin(app, outside)
        for method, path in ADMIN_CALLS:
            _error(await outside.request(method, path, headers=admin.headers, json={}), 403, "forbidden")
            _error(await outside.request(method, path, json={}), 403, "forbidden")  # before any token check
        assert (await inside.get("/api/admin/users", headers=admin.headers)).status_code == 200
        assert (await outside.get("/api/auth/me", headers=admin.headers)).status_code == 200  # only /admin is fenced


async def test_list_users_with_balance_usage_search_and_paging(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client, "root@example.com")
    alice = await signup(client, "alice@example.com", name="Alice")
    await signup(client, "bob@example.net")
    await record_usage(app, alice, cost_pico=250_000_000_000)
    await record_usage(app, alice, cost_pico=1_000_000, created_at=datetime.now(UTC) - timedelta(days=31))

    page = (await client.get("/api/admin/users", headers=admin.headers)).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 20, 0)
    assert [item["email"] for item in page["items"]] == ["bob@example.net", "alice@example.com", "root@example.com"]
    row = page["items"][1]
    assert (row["id"], row["name"], row["role"], row["status"], row["plan_name"]) == (
        alice.user_id, "Alice", "user", "active", "free")
    assert (row["balance_usd"], row["held_usd"]) == ("0.749999", "0.00")
    assert row["usage_30d"] == {"requests": 1, "cost_usd": "0.25"}
    assert row["account_id"] == await account_id(app, alice)

    found = (await client.get("/api/admin/users?email=EXAMPLE.COM", headers=admin.headers)).json()
    assert [item["email"] for item in found["items"]] == ["alice@example.com", "root@example.com"]
    literal = (await client.get("/api/admin/users?email=_", headers=admin.headers)).json()
    assert literal["total"] == 0  # LIKE wildcards are matched literally
    second = (await client.get("/api/admin/users?limit=1&offset=1", headers=admin.headers)).json()
    assert [item["email"] for item in second["items"]] == ["alice@example.com"] and second["total"] == 3
    _error(await client.get("/api/admin/users?limit=500", headers=admin.headers), 400, "invalid_body", "limit")
    one = await client.get(f"/api/admin/users/{alice.user_id}", headers=admin.headers)
    assert one.json() == row
    _error(await client.get("/api/admin/users/missing", headers=admin.headers), 404, "not_found")


async def test_credit_adjustments(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client)
    url = f"/api/admin/users/{user.user_id}/credits"
    credited = await client.post(url, headers=admin.headers, json={"amount_usd": "+5.00", "note": "goodwill"})
    assert credited.status_code == 200 and credited.json()["balance_usd"] == "6.00"
    _error(await client.post(url, headers=admin.headers, json={"amount_usd": "-2.50"}), 400, "invalid_body",
           "reason")
    debited = await client.post(url, headers=admin.headers, json={"amount_usd": "-2.50", "reason": "abuse"})
    assert debited.json()["balance_usd"] == "3.50"
    _error(await client.post(url, headers=admin.headers, json={"amount_usd": "-3.51", "reason": "r"}), 400,
           "insufficient_credits", "amount_usd")
    for body in [{}, {"amount_usd": "0"}, {"amount_usd": 1.5}, {"amount_usd": "five"},
                 {"amount_usd": "1.0000000000001"}]:
        _error(await client.post(url, headers=admin.headers, json=body), 400, "invalid_body", "amount_usd")
    _error(await client.post(url, headers=admin.headers, json={"amount_usd": "1", "note": "n" * 501}), 400,
           "invalid_body", "note")
    _error(await client.post("/api/admin/users/missing/credits", headers=admin.headers,
                             json={"amount_usd": "1", "reason": "r"}), 404, "not_found")

    async with ctx(app).sessions() as session:
        entries = (await session.execute(
            sa.select(CreditTransaction).where(CreditTransaction.kind == "admin_adjust")  # type: ignore[arg-type]
            .order_by(CreditTransaction.id)  # type: ignore[arg-type]
        )).scalars().all()
    assert [(e.amount_pico, e.note, e.actor_user_id) for e in entries] == [
        (5 * 10**12, "goodwill", admin.user_id), (-25 * 10**11, "abuse", admin.user_id)]
    ledger = (await client.get("/api/billing/transactions", headers=user.headers)).json()
    assert [item["kind"] for item in ledger["items"]] == ["admin_adjust", "admin_adjust", "grant"]


async def test_set_plan(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client)
    raw, _ = await create_key(client, user)
    assert (await ctx(app).key_resolver.resolve(raw)).plan_name == "free"  # type: ignore[union-attr]
    url = f"/api/admin/users/{user.user_id}/plan"
    response = await client.post(url, headers=admin.headers, json={"plan": "pro"})
    assert response.status_code == 200
    assert (response.json()["plan_name"], response.json()["balance_usd"]) == ("pro", "1.00")
    assert (await ctx(app).key_resolver.resolve(raw)).plan_name == "pro"  # type: ignore[union-attr]
    _error(await client.post(url, headers=admin.headers, json={"plan": "starter", "grant_included_credits": True}),
           400, "invalid_body", "reason")
    granted = await client.post(url, headers=admin.headers, json={"plan": "starter", "grant_included_credits": True,
                                                                  "reason": "annual deal"})
    assert (granted.json()["plan_name"], granted.json()["balance_usd"]) == ("starter", "13.00")
    ledger = (await client.get("/api/billing/transactions", headers=user.headers)).json()["items"]
    assert ledger[0]["note"] == "starter plan included credits: annual deal"
    _error(await client.post(url, headers=admin.headers, json={"plan": "platinum"}), 400, "invalid_body", "plan")
    _error(await client.post(url, headers=admin.headers, json={}), 400, "invalid_body", "plan")
    _error(await client.post(url, headers=admin.headers, json={"plan": "pro", "grant_included_credits": "yes"}),
           400, "invalid_body", "grant_included_credits")
    _error(await client.post("/api/admin/users/missing/plan", headers=admin.headers, json={"plan": "pro"}), 404,
           "not_found")


async def test_disable_and_enable_a_user(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client)
    raw, _ = await create_key(client, user)
    assert await ctx(app).key_resolver.resolve(raw) is not None
    disabled = await client.post(f"/api/admin/users/{user.user_id}/disable", headers=admin.headers)
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    _error(await client.get("/api/auth/me", headers=user.headers), 403, "account_disabled")
    assert await ctx(app).key_resolver.resolve(raw) is None
    enabled = await client.post(f"/api/admin/users/{user.user_id}/enable", headers=admin.headers)
    assert enabled.json()["status"] == "active"
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 200
    assert await ctx(app).key_resolver.resolve(raw) is not None
    _error(await client.post(f"/api/admin/users/{admin.user_id}/disable", headers=admin.headers), 400,
           "cannot_disable_self")
    _error(await client.post("/api/admin/users/missing/disable", headers=admin.headers), 404, "not_found")


async def test_stats_over_a_period(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    alice: Login = await signup(client)
    bob = await signup(client)
    await client.post("/api/billing/topup", headers=bob.headers, json={"amount_usd": 25})
    await record_usage(app, alice, input_tokens=100, output_tokens=50, cost_pico=25_000_000)
    await record_usage(app, alice, status="error", input_tokens=3, output_tokens=0, cost_pico=0)
    await record_usage(app, bob, input_tokens=10, output_tokens=5, cost_pico=2_500_000,
                       created_at=datetime.now(UTC) - timedelta(days=40))
    stats = (await client.get("/api/admin/stats", headers=admin.headers)).json()
    assert {key: stats[key] for key in ("users", "new_users", "active_users", "requests", "errors", "input_tokens",
                                        "output_tokens", "revenue_usd", "topups_usd")} == {
        "users": 3, "new_users": 3, "active_users": 1, "requests": 2, "errors": 1, "input_tokens": 103,
        "output_tokens": 50, "revenue_usd": "0.000025", "topups_usd": "25.00"}
    assert stats["since"].endswith("Z") and stats["until"].endswith("Z")
    since = (datetime.now(UTC) - timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    wide = (await client.get(f"/api/admin/stats?since={since}", headers=admin.headers)).json()
    assert (wide["requests"], wide["active_users"], wide["revenue_usd"]) == (3, 2, "0.0000275")
    _error(await client.get("/api/admin/stats?since=garbage", headers=admin.headers), 400, "invalid_body", "since")


async def test_reload_swaps_a_valid_registry_and_refuses_an_invalid_one(make_settings: Callable[..., Settings],
                                                                        database_url: str, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_FILE.read_text())
    async with started(make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models))) as app, \
            client_from(app, "127.0.0.1") as client:
        admin = await make_admin(app, client)
        models.write_text(MODELS_FILE.read_text().replace("rpm: 60", "rpm: 61"))
        response = await client.post("/api/admin/reload", headers=admin.headers)
        assert response.status_code == 200
        assert response.json()["status"] == "reloaded" and "plans ~starter" in response.json()["diff"]
        plans = {p["name"]: p for p in (await client.get("/api/plans")).json()["items"]}
        assert plans["starter"]["rpm"] == 61

        models.write_text(MODELS_FILE.read_text().replace("rpm: 60", "rpn: 60"))
        refused = await client.post("/api/admin/reload", headers=admin.headers)
        _error(refused, 400, "registry_invalid")
        assert "plans[1].rpn" in envelope(refused)["message"]
        plans = {p["name"]: p for p in (await client.get("/api/plans")).json()["items"]}
        assert plans["starter"]["rpm"] == 61  # the running registry stayed in force
