"""/admin: hidden (404) from everyone but admins within ADMIN_ALLOWED_CIDRS; users, credits, plan,
status, nodes, registry reload; CSRF refusal."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.db.models import CreditTransaction
from gateway.settings import Settings
from tests.conftest import MODELS_FILE
from tests.support.control_plane import ctx, use_cheap_passwords
from tests.support.web import other_client, text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]
PAGES = ["/admin", "/admin/users", "/admin/users/x", "/admin/nodes", "/admin/registry", "/admin/invites",
         "/admin/codes", "/admin/webhooks", "/admin/users/x/delete"]
POSTS = ["/admin/users/x/credits", "/admin/users/x/plan", "/admin/users/x/status", "/admin/registry",
         "/admin/invites", "/admin/codes", "/admin/users/x/trial", "/admin/users/x/delete"]


async def _member(app: Starlette, user_id: str) -> tuple[int, str, str]:
    from gateway.accounts import require_member

    async with ctx(app).sessions() as session:
        member = await require_member(session, user_id)
        return member.account.balance_pico, member.account.plan_name, member.user.status


async def test_non_admins_get_404_and_anonymous_the_login(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    for path in PAGES:
        assert (await client.get(path)).status_code == 404, path
    for path in POSTS:
        assert (await client.post(path, data={"csrf_token": user.csrf})).status_code == 404, path
    async with other_client(app) as anonymous:
        response = await anonymous.get("/admin/users")
        assert response.headers["location"] == "/login?next=/admin/users"
    assert 'href="/admin"' not in (await client.get("/dashboard")).text


@contextlib.asynccontextmanager
async def _started(settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        yield app


async def test_outside_admin_allowed_cidrs_even_an_admin_gets_404(make_settings: Callable[..., Settings],
                                                                  database_url: str) -> None:
    settings = make_settings(DATABASE_URL=database_url, ADMIN_ALLOWED_CIDRS="10.0.0.0/8")
    async with _started(settings) as app, other_client(app, "127.0.0.1") as outside, \
            other_client(app, "10.1.2.3") as inside:
        await web_signup(outside, app, "boss@example.com", admin=True)
        assert (await outside.get("/admin")).status_code == 404
        await inside.post("/login", data={"email": "boss@example.com", "password": "correct-horse-battery-staple"})
        assert (await inside.get("/admin")).status_code == 200


async def test_search_users_and_open_a_user(web: App) -> None:
    app, client = web
    await web_signup(client, app, admin=True)
    async with other_client(app) as browser, other_client(app) as second:
        alice = await web_signup(browser, app, "alice@corp.example")
        await web_signup(second, app, "bob@else.example")
    page = text_of(await client.get("/admin/users?q=CORP"))
    assert "1 user" in page and "alice@corp.example" in page and "bob@" not in page
    assert "free $1.00 0 $0.00 active" in page
    user_page = await client.get(f"/admin/users/{alice.user_id}")
    assert user_page.status_code == 200 and "Adjust credits" in user_page.text
    assert (await client.get("/admin/users/nobody")).status_code == 404


async def test_adjust_credits_with_a_reason(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    async with other_client(app) as browser:
        alice = await web_signup(browser, app)
    path = f"/admin/users/{alice.user_id}/credits"
    response = await client.post(path, data={"csrf_token": admin.csrf, "amount_usd": "+4.50", "reason": "goodwill"})
    assert (response.status_code, response.headers["location"]) == (303, f"/admin/users/{alice.user_id}?done=credits")
    page = text_of(await client.get(response.headers["location"]))
    assert "Credits adjusted." in page and "Balance $5.50" in page and "admin_adjust +$4.50 goodwill" in page
    async with ctx(app).sessions() as session:
        entry = (await session.execute(sa.select(CreditTransaction)
                                       .where(col(CreditTransaction.kind) == "admin_adjust"))).scalar_one()
    assert (entry.amount_pico, entry.note, entry.actor_user_id) == (4_500_000_000_000, "goodwill", admin.user_id)
    too_much = await client.post(path, data={"csrf_token": admin.csrf, "amount_usd": "-100", "reason": "x"})
    assert too_much.status_code == 400
    assert 'id="e-amount_usd">The account\'s available balance cannot cover a debit of 100.00 USD.' in \
        too_much.text.replace("&#39;", "'")
    zero = await client.post(path, data={"csrf_token": admin.csrf, "amount_usd": "0"})
    assert 'id="e-amount_usd">amount_usd must not be zero.' in zero.text
    assert (await _member(app, alice.user_id))[0] == 5_500_000_000_000


async def test_a_cross_site_admin_post_changes_nothing(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    async with other_client(app) as browser:
        alice = await web_signup(browser, app)
    for path, data in [(f"/admin/users/{alice.user_id}/credits", {"amount_usd": "+500"}),
                       (f"/admin/users/{alice.user_id}/plan", {"plan": "team"}),
                       (f"/admin/users/{alice.user_id}/status", {"status": "disabled"})]:
        assert (await client.post(path, data=data)).status_code == 403
        assert (await client.post(path, data={**data, "csrf_token": admin.csrf},
                                  headers={"Sec-Fetch-Site": "cross-site"})).status_code == 403
    assert await _member(app, alice.user_id) == (10**12, "free", "active")


async def test_change_plan_and_disable_then_enable(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    async with other_client(app) as browser:
        alice = await web_signup(browser, app)
        base = f"/admin/users/{alice.user_id}"
        no_reason = await client.post(f"{base}/plan", data={"csrf_token": admin.csrf, "plan": "pro",
                                                             "grant_included_credits": "on"})
        assert no_reason.status_code == 400 and await _member(app, alice.user_id) == (10**12, "free", "active")
        await client.post(f"{base}/plan", data={"csrf_token": admin.csrf, "plan": "pro",
                                                "grant_included_credits": "on", "grant_reason": "upgrade"})
        balance, plan, _ = await _member(app, alice.user_id)
        assert plan == "pro" and balance > 10**12
        response = await client.post(f"{base}/status", data={"csrf_token": admin.csrf, "status": "disabled"})
        assert response.headers["location"] == f"{base}?done=disabled"
        assert (await browser.get("/dashboard")).status_code == 303  # their session ends at once
        await client.post(f"{base}/status", data={"csrf_token": admin.csrf, "status": "active"})
        assert (await browser.get("/dashboard")).status_code == 200
    own = await client.post(f"/admin/users/{admin.user_id}/status", data={"csrf_token": admin.csrf,
                                                                          "status": "disabled"})
    assert own.status_code == 400 and "An admin cannot disable their own account." in own.text


async def test_overview_and_nodes(web: App) -> None:
    app, client = web
    await web_signup(client, app, admin=True)
    overview = text_of(await client.get("/admin"))
    assert "Users 1" in overview and "No traffic in the last 30 days." in overview
    nodes = text_of(await client.get("/admin/nodes"))
    assert "local 127.0.0.1:11434 down" in nodes  # nothing listens there in this test


@pytest.fixture
def registry_copy(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(MODELS_FILE.read_text())
    return path


async def test_registry_reload_shows_the_diff_or_the_file_line_error(make_settings: Callable[..., Settings],
                                                                     database_url: str, registry_copy: Path) -> None:
    settings = make_settings(DATABASE_URL=database_url, MODELS_FILE=str(registry_copy))
    async with _started(settings) as app, other_client(app) as client:
        admin = await web_signup(client, app, admin=True)
        page = text_of(await client.get("/admin/registry"))
        version = ctx(app).registry.current.version
        assert f"Version {version}" in page and "6 models" in page
        registry_copy.write_text(registry_copy.read_text().replace('output_price: "0.300000"',
                                                                   'output_price: "0.400000"', 1))
        reloaded = await client.post("/admin/registry", data={"csrf_token": admin.csrf})
        assert reloaded.status_code == 200
        assert "Reloaded: registry " in text_of(reloaded) and "models ~privaterouter/fast" in text_of(reloaded)
        assert ctx(app).registry.current.version != version
        registry_copy.write_text(registry_copy.read_text().replace("context: 8192", "context: lots", 1))
        refused = await client.post("/admin/registry", data={"csrf_token": admin.csrf})
        assert refused.status_code == 400
        assert f"{registry_copy}:" in refused.text and "The file is invalid" in refused.text
        assert (await client.post("/admin/registry", data={})).status_code == 403


async def test_a_credit_too_large_to_store_is_a_field_error_not_a_500(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    async with other_client(app) as browser:
        alice = await web_signup(browser, app)
    path = f"/admin/users/{alice.user_id}/credits"
    for amount in ("99999999999999999999999", "1e30", "-1e30"):
        response = await client.post(path, data={"csrf_token": admin.csrf, "amount_usd": amount, "reason": "typo"})
        assert response.status_code == 400
        assert 'id="e-amount_usd">amount_usd must be at most 1000000.00 USD.' in response.text
    assert (await _member(app, alice.user_id))[0] == 1_000_000_000_000
