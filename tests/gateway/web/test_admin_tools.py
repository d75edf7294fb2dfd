"""/admin additions: invites (token shown once), redemption-code batches (CSV once), trial grants and soft
delete on the user page, webhook deliveries, and the nodes page from gateway.nodes (as /api/admin/nodes)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlmodel import col
from starlette.applications import Starlette

from gateway.accounts import require_member
from gateway.db.models import Invite, User, WebhookEvent
from gateway.settings import Settings
from providers.ollama.fake.info import VERSION as EMULATOR_VERSION
from tests.support.control_plane import ctx
from tests.support.nodes import emulator_nodes
from tests.support.running import running
from tests.support.web import other_client, text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]
USD = 10**12


async def test_an_invite_token_is_shown_once_and_listed_without_it(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    created = await client.post("/admin/invites", data={"csrf_token": admin.csrf, "email": "New@Example.com",
                                                        "days": "3"})
    assert created.status_code == 200 and "Copy this invite now." in created.text
    token = created.text.split('<code id="invite-link">', 1)[1].split("</code>", 1)[0]
    assert len(token) >= 20
    listed = await client.get("/admin/invites")
    assert token not in listed.text and "new@example.com" in text_of(listed) and "open" in text_of(listed)
    async with ctx(app).sessions() as session:
        stored = (await session.execute(sa.select(Invite.token_hash))).scalars().all()
    assert len(stored) == 1 and token not in stored
    bad = await client.post("/admin/invites", data={"csrf_token": admin.csrf, "days": "0"})
    assert bad.status_code == 400 and 'id="e-days"' in bad.text and "days must be an integer from 1 to 90" in bad.text


async def test_code_batches_download_once_and_redeem(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    bad = await client.post("/admin/codes", data={"csrf_token": admin.csrf, "count": "0", "amount_usd": "5",
                                                  "reason": "promo"})
    assert bad.status_code == 400 and 'id="e-count"' in bad.text
    no_reason = await client.post("/admin/codes", data={"csrf_token": admin.csrf, "count": "2", "amount_usd": "5"})
    assert no_reason.status_code == 400 and 'id="e-reason"' in no_reason.text
    response = await client.post("/admin/codes", data={"csrf_token": admin.csrf, "count": "3", "amount_usd": "5",
                                                       "reason": "launch promo", "expires_at": ""})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="codes-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 3 and {row["amount_usd"] for row in rows} == {"5.00"}
    page = await client.get("/admin/codes")
    assert rows[0]["code"] not in page.text and "3 0 $5.00 never launch promo" in text_of(page)
    async with other_client(app) as buyer_client:
        buyer = await web_signup(buyer_client, app)
        redeemed = await buyer_client.post("/billing/redeem", data={"csrf_token": buyer.csrf, "code": rows[0]["code"]})
        assert redeemed.status_code == 303
    assert "3 1 $5.00" in text_of(await client.get("/admin/codes"))


async def test_trial_grant_and_soft_delete_on_the_user_page(web: App) -> None:
    app, client = web
    admin = await web_signup(client, app, admin=True)
    async with other_client(app) as other:
        user = await web_signup(other, app)
        url = f"/admin/users/{user.user_id}"
        bad = await client.post(f"{url}/trial", data={"csrf_token": admin.csrf, "amount_usd": "3", "days": "x",
                                                      "reason": "pilot"})
        assert bad.status_code == 400 and 'id="e-trial-days"' in bad.text
        granted = await client.post(f"{url}/trial", data={"csrf_token": admin.csrf, "amount_usd": "3", "days": "7",
                                                          "reason": "pilot"})
        assert (granted.status_code, granted.headers["location"]) == (303, f"{url}?done=trial")
        page = text_of(await client.get(f"{url}?done=trial"))
        assert "Trial credit granted." in page and "$4.00" in page and "$3.00 trial until" in page
        assert "trial_grant +$3.00 trial granted by an admin (7 days): pilot" in page
        confirm = await client.get(f"{url}/delete")
        assert confirm.status_code == 200 and "This cannot be undone." in text_of(confirm)
        deleted = await client.post(f"{url}/delete", data={"csrf_token": admin.csrf})
        assert (deleted.status_code, deleted.headers["location"]) == (303, f"{url}?done=deleted")
        assert (await other.get("/dashboard")).status_code == 303  # their session ended
    async with ctx(app).sessions() as session:
        member = await require_member(session, user.user_id)
    assert member.user.status == "deleted" and member.account.balance_pico == 4 * USD  # the ledger stays
    own = await client.get(f"/admin/users/{admin.user_id}")
    assert "Delete user…" not in own.text
    refused = await client.post(f"/admin/users/{admin.user_id}/delete", data={"csrf_token": admin.csrf})
    assert refused.status_code == 400 and "cannot delete their own account" in refused.text
    async with ctx(app).sessions() as session:
        status = (await session.execute(sa.select(User.status).where(col(User.id) == admin.user_id))).scalar_one()
    assert status == "active"


async def test_webhook_deliveries_are_listed_and_filtered(web: App) -> None:
    app, client = web
    await web_signup(client, app, admin=True)
    async with ctx(app).sessions() as session:
        session.add_all([WebhookEvent(provider="stripe", event_id="evt_1", type="checkout.session.completed",
                                      outcome="credited"),
                         WebhookEvent(provider="btcpay", event_id="btc_1", type="InvoiceSettled", outcome="ignored",
                                      detail="unknown invoice")])
        await session.commit()
    everything = text_of(await client.get("/admin/webhooks"))
    assert "2 deliveries" in everything and "evt_1 checkout.session.completed credited" in everything
    assert "btc_1 InvoiceSettled ignored unknown invoice" in everything
    stripe_only = text_of(await client.get("/admin/webhooks?provider=stripe"))
    assert "1 delivery" in stripe_only and "btc_1" not in stripe_only


async def test_nodes_page_shows_what_the_api_shows(gateway_settings: Callable[..., Settings],
                                                   tmp_path: Path) -> None:
    with emulator_nodes(tmp_path, 2) as found:
        httpx.post(f"{found.urls[1]}/api/chat", json={"model": "gemma4"}).raise_for_status()
        async with running(gateway_settings(MODELS_FILE=str(found.models_file))) as (app, client):
            await web_signup(client, app, admin=True)
            page = text_of(await client.get("/admin/nodes"))
            api = await client.get("/api/admin/nodes")
    items = api.json()["items"]
    for item in items:
        assert f"{item['name']} {item['host']} up" in page
    assert page.count(EMULATOR_VERSION) == 2 and "0 / 8" in page and "gemma4:latest" in page
    assert " ms " in page
