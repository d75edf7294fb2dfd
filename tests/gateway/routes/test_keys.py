from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.auth.apikeys import hash_key
from gateway.auth.keyresolver import KeyResolver
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import ApiKey
from gateway.settings import Settings
from tests.conftest import envelope
from tests.support.control_plane import create_key, ctx, record_usage, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]
KEY_FIELDS = {"id", "name", "key_prefix", "status", "monthly_limit_usd", "month_spend_usd", "allowed_models", "rpm",
              "expires_at", "last_used_at", "created_at"}


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


async def test_create_returns_the_key_once_and_stores_only_its_hash(api: App) -> None:
    app, client = api
    login = await signup(client)
    response = await client.post("/api/keys", headers=login.headers, json={"name": "laptop"})
    assert response.status_code == 201
    body = response.json()
    raw, key = body["key"], body["api_key"]
    assert re.fullmatch(r"sk-pr-live-[A-Za-z0-9]{32,}", raw)
    assert set(key) == KEY_FIELDS
    assert (key["name"], key["key_prefix"], key["status"]) == ("laptop", raw[:15], "active")
    assert (key["monthly_limit_usd"], key["last_used_at"], key["allowed_models"]) == (None, None, None)
    assert key["created_at"].endswith("Z")

    listed = (await client.get("/api/keys", headers=login.headers)).json()
    assert listed == {"items": [key]} and raw not in str(listed)

    async with ctx(app).sessions() as session:
        rows = (await session.execute(sa.select(ApiKey.__table__))).all()  # type: ignore[attr-defined]
    assert len(rows) == 1
    assert all(raw not in str(value) for value in rows[0])
    assert rows[0].key_hash == hash_key(raw, ctx(app).settings.app_secret_key)
    assert rows[0].key_prefix == raw[:15]


async def test_key_settings_reach_the_resolver(api: App) -> None:
    app, client = api
    login = await signup(client)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    raw, key = await create_key(client, login, monthly_limit_usd="5.00", rpm=30, expires_at=expires.isoformat(),
                                allowed_models=["privaterouter/embed", "privaterouter/fast", "privaterouter/embed"])
    assert (key["monthly_limit_usd"], key["rpm"]) == ("5.00", 30)
    assert key["allowed_models"] == ["privaterouter/embed", "privaterouter/fast"]
    assert key["expires_at"] == expires.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    principal = await ctx(app).key_resolver.resolve(raw)
    assert principal is not None
    assert (principal.key_id, principal.user_id, principal.plan_name) == (key["id"], login.user_id, "free")
    assert principal.allowed_models == ("privaterouter/embed", "privaterouter/fast")
    assert (principal.monthly_limit_pico, principal.rpm, principal.expires_at) == (5 * 10**12, 30, expires)


async def test_create_refuses_bad_fields_naming_them(api: App) -> None:
    _, client = api
    login = await signup(client)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases = [({"name": ""}, "name"), ({"name": "n" * 101}, "name"), ({"name": 5}, "name"),
             ({"monthly_limit_usd": "-1"}, "monthly_limit_usd"), ({"monthly_limit_usd": 2.5}, "monthly_limit_usd"),
             ({"monthly_limit_usd": "lots"}, "monthly_limit_usd"),
             ({"allowed_models": ["privaterouter/nope"]}, "allowed_models"), ({"allowed_models": []}, "allowed_models"),
             ({"allowed_models": "privaterouter/fast"}, "allowed_models"),
             ({"expires_at": past}, "expires_at"), ({"expires_at": "tomorrow"}, "expires_at"),
             ({"rpm": 0}, "rpm"), ({"rpm": "10"}, "rpm"), ({"status": "active"}, "status"),
             ({"colour": "red"}, "colour")]
    for body, param in cases:
        response = await client.post("/api/keys", headers=login.headers, json=body)
        assert response.status_code == 400, body
        assert (envelope(response)["code"], envelope(response)["param"]) == ("invalid_body", param), body
    assert (await client.get("/api/keys", headers=login.headers)).json() == {"items": []}


async def test_patch_changes_and_clears_settings(api: App) -> None:
    app, client = api
    login = await signup(client)
    raw, key = await create_key(client, login, monthly_limit_usd="5", rpm=10)
    url = f"/api/keys/{key['id']}"
    changes = {"name": "ci", "monthly_limit_usd": None, "rpm": None, "allowed_models": ["privaterouter/fast"]}
    response = await client.patch(url, headers=login.headers, json=changes)
    assert response.status_code == 200
    changed = response.json()
    assert (changed["name"], changed["monthly_limit_usd"], changed["rpm"]) == ("ci", None, None)
    assert changed["allowed_models"] == ["privaterouter/fast"]

    disabled = await client.patch(url, headers=login.headers, json={"status": "disabled"})
    assert disabled.json()["status"] == "disabled"
    assert await ctx(app).key_resolver.resolve(raw) is None  # this replica forgets at once
    enabled = await client.patch(url, headers=login.headers, json={"status": "active"})
    assert enabled.json()["status"] == "active"
    assert await ctx(app).key_resolver.resolve(raw) is not None

    for body, param in [({"status": "deleted"}, "status"), ({"key": "sk-pr-live-x"}, "key"), ({"rpm": -1}, "rpm")]:
        response = await client.patch(url, headers=login.headers, json=body)
        assert response.status_code == 400 and envelope(response)["param"] == param


async def test_delete_is_soft_and_final(api: App) -> None:
    app, client = api
    login = await signup(client)
    raw, key = await create_key(client, login)
    await record_usage(app, login, key_id=key["id"])
    response = await client.delete(f"/api/keys/{key['id']}", headers=login.headers)
    assert response.status_code == 200 and response.json()["status"] == "deleted"
    assert (await client.get("/api/keys", headers=login.headers)).json() == {"items": []}
    assert await ctx(app).key_resolver.resolve(raw) is None
    for method in ("PATCH", "DELETE"):
        again = await client.request(method, f"/api/keys/{key['id']}", headers=login.headers, json={"name": "x"})
        assert again.status_code == 404 and envelope(again)["code"] == "not_found"
    usage = (await client.get("/api/usage", headers=login.headers)).json()
    assert [item["key_id"] for item in usage["items"]] == [key["id"]]  # history keeps the key id
    async with ctx(app).sessions() as session:
        assert (await session.get(ApiKey, key["id"])) is not None


async def test_another_users_key_is_not_found(api: App) -> None:
    _, client = api
    owner, intruder = await signup(client), await signup(client)
    _, key = await create_key(client, owner)
    for method in ("PATCH", "DELETE"):
        theirs = await client.request(method, f"/api/keys/{key['id']}", headers=intruder.headers,
                                      json={"status": "disabled"})
        unknown = await client.request(method, "/api/keys/00000000-0000-0000-0000-000000000000",
                                       headers=intruder.headers, json={"status": "disabled"})
        assert theirs.status_code == unknown.status_code == 404
        assert envelope(theirs)["code"] == envelope(unknown)["code"] == "not_found"
    assert (await client.get("/api/keys", headers=intruder.headers)).json() == {"items": []}
    assert (await client.get("/api/keys", headers=owner.headers)).json()["items"][0]["status"] == "active"


async def test_at_most_50_live_keys_per_user(api: App) -> None:
    _, client = api
    login = await signup(client)
    created = await asyncio.gather(*(client.post("/api/keys", headers=login.headers, json={"name": f"k{n}"})
                                     for n in range(52)))
    assert sorted(response.status_code for response in created) == [201] * 50 + [409] * 2
    refused = next(response for response in created if response.status_code == 409)
    assert envelope(refused)["code"] == "too_many_keys"
    first = next(response for response in created if response.status_code == 201).json()["api_key"]
    await client.delete(f"/api/keys/{first['id']}", headers=login.headers)
    assert (await client.post("/api/keys", headers=login.headers, json={"name": "again"})).status_code == 201


async def test_disabled_key_is_refused_within_a_second_on_another_replica(api: App) -> None:
    app, client = api
    login = await signup(client)
    raw, key = await create_key(client, login)
    other_replica = KeyResolver(ctx(app).sessions, ctx(app).settings.app_secret_key)
    assert await other_replica.resolve(raw) is not None
    await client.patch(f"/api/keys/{key['id']}", headers=login.headers, json={"status": "disabled"})
    started = time.monotonic()
    while await other_replica.resolve(raw) is not None:
        assert time.monotonic() - started < 1.05
        await asyncio.sleep(0.05)


async def test_last_used_at_is_recorded_without_a_write_per_request(api: App) -> None:
    app, client = api
    login = await signup(client)
    _, key = await create_key(client, login)
    resolver = ctx(app).key_resolver
    resolver.touch(key["id"])
    shown = (await client.get("/api/keys", headers=login.headers)).json()["items"][0]["last_used_at"]
    assert shown is not None and shown.endswith("Z")
    async with ctx(app).sessions() as session:
        assert (await session.get(ApiKey, key["id"])).last_used_at is None  # type: ignore[union-attr]
    await resolver.flush_last_used()
    async with ctx(app).sessions() as session:
        assert (await session.get(ApiKey, key["id"])).last_used_at is not None  # type: ignore[union-attr]
    assert (await client.get("/api/keys", headers=login.headers)).json()["items"][0]["last_used_at"] == shown


async def test_shutdown_flushes_recorded_uses(make_settings: Callable[..., Settings], database_url: str) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url))
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            _, key = await create_key(client, await signup(client))
        ctx(app).key_resolver.touch(key["id"])
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            stored = await session.get(ApiKey, key["id"])
    finally:
        await engine.dispose()
    assert stored is not None and stored.last_used_at is not None
