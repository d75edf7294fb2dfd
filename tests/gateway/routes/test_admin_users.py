"""Admin user lifecycle: soft delete (keys revoked at once, email freed, ledger and usage kept)."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.db.models import ApiKey, CreditTransaction, UsageEvent
from tests.conftest import envelope
from tests.support.control_plane import (
    PASSWORD,
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


async def test_soft_delete_revokes_keys_frees_the_email_and_keeps_the_books(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    user = await signup(client, "leaver@example.com")
    raw, key = await create_key(client, user)
    assert await ctx(app).key_resolver.resolve(raw) is not None  # cached as valid
    await record_usage(app, user, cost_pico=10**9)
    account = await account_id(app, user)

    deleted = await client.delete(f"/api/admin/users/{user.user_id}", headers=admin.headers)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["status"] == "deleted" and deleted.json()["email"].endswith("@deleted.invalid")
    assert await ctx(app).key_resolver.resolve(raw) is None  # at once, not after the cache expires
    assert (await client.get("/api/auth/me", headers=user.headers)).status_code == 403
    login = await client.post("/api/auth/login", json={"email": "leaver@example.com", "password": PASSWORD})
    assert login.status_code == 401
    again = await signup(client, "leaver@example.com")  # the address is free again
    assert again.user_id != user.user_id

    async with ctx(app).sessions() as session:
        status = await session.scalar(sa.select(ApiKey.status).where(ApiKey.id == key["id"]))
        events = await session.scalar(sa.select(sa.func.count()).select_from(UsageEvent)
                                      .where(UsageEvent.account_id == account))
        rows = await session.scalar(sa.select(sa.func.count()).select_from(CreditTransaction)
                                    .where(CreditTransaction.account_id == account))
    assert (status, events, rows) == ("deleted", 1, 2)  # the grant and the usage stay for accounting

    revived = await client.post(f"/api/admin/users/{user.user_id}/enable", headers=admin.headers)
    assert revived.status_code == 409 and envelope(revived)["code"] == "user_deleted"
    twice = await client.delete(f"/api/admin/users/{user.user_id}", headers=admin.headers)
    assert twice.status_code == 200  # idempotent


async def test_delete_refusals(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    own = await client.delete(f"/api/admin/users/{admin.user_id}", headers=admin.headers)
    assert own.status_code == 400 and envelope(own)["code"] == "cannot_delete_self"
    missing = await client.delete("/api/admin/users/nobody", headers=admin.headers)
    assert missing.status_code == 404
