"""/keys: the once-shown secret, disable/enable, delete with confirmation, CSRF and other users' keys."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette

from tests.support.control_plane import ctx
from tests.support.web import other_client, text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]
SECRET = re.compile(r'<code id="secret">(sk-pr-[^<]+)</code>')


async def _live_keys(app: Starlette, user_id: str) -> list[str]:
    from gateway import keys

    async with ctx(app).sessions() as session:
        return [key.status for key in await keys.list_keys(session, user_id=user_id)]


async def test_created_secret_is_shown_once_and_works_on_v1(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    response = await client.post("/keys", data={"csrf_token": user.csrf, "name": "laptop",
                                                "monthly_limit_usd": "5", "allowed_models": "privaterouter/fast"})
    assert response.status_code == 201
    found = SECRET.search(response.text)
    assert found is not None
    secret = found.group(1)
    assert "This is the only time it is shown" in text_of(response)
    assert 'data-copy="#secret"' in response.text
    again = await client.get("/keys")
    assert secret not in again.text and secret[:14] not in again.text.replace(secret[:12], "")
    listed = text_of(again)
    assert "laptop" in listed and "$0.00 / $5.00" in listed and "privaterouter/fast" in listed
    models = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert [item["id"] for item in models.json()["data"]] == ["privaterouter/fast"]


async def test_create_errors_are_shown_next_to_their_field(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    response = await client.post("/keys", data={"csrf_token": user.csrf, "name": "x", "monthly_limit_usd": "lots"})
    assert response.status_code == 400
    assert 'id="e-monthly_limit_usd">monthly_limit_usd must be a decimal string' in response.text
    response = await client.post("/keys", data={"csrf_token": user.csrf, "name": "x", "expires_at": "2001-01-01"})
    assert 'id="e-expires_at">expires_at must be in the future.' in response.text
    assert await _live_keys(app, user.user_id) == []


async def test_a_cross_site_post_with_the_cookie_creates_nothing(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    # What a hostile page can make the victim's browser send: the cookie, but no token.
    for headers, data in [({}, {"name": "evil"}), ({"Sec-Fetch-Site": "cross-site"}, {"name": "evil"}),
                          ({}, {"name": "evil", "csrf_token": "0" * 64}),
                          ({"Origin": "https://evil.example"}, {"name": "evil", "csrf_token": user.csrf})]:
        response = await client.post("/keys", data=data, headers=headers)
        assert response.status_code == 403, headers
        assert "Request refused" in response.text
    assert await _live_keys(app, user.user_id) == []
    # htmx sends the token as a header instead of a field.
    response = await client.post("/keys", data={"name": "htmx"}, headers={"X-CSRF-Token": user.csrf})
    assert response.status_code == 201


async def test_disable_enable_and_delete_with_confirmation(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    await client.post("/keys", data={"csrf_token": user.csrf, "name": "ci"})
    from gateway import keys

    async with ctx(app).sessions() as session:
        key = (await keys.list_keys(session, user_id=user.user_id))[0]
    response = await client.post(f"/keys/{key.id}/status", data={"csrf_token": user.csrf, "status": "disabled"})
    assert (response.status_code, response.headers["location"]) == (303, "/keys")
    assert await _live_keys(app, user.user_id) == ["disabled"]
    await client.post(f"/keys/{key.id}/status", data={"csrf_token": user.csrf, "status": "active"})
    assert await _live_keys(app, user.user_id) == ["active"]
    confirm = await client.get(f"/keys/{key.id}/delete")
    assert confirm.status_code == 200 and "Delete “ci”?" in text_of(confirm)
    assert await _live_keys(app, user.user_id) == ["active"]  # asking deletes nothing
    refused = await client.post(f"/keys/{key.id}/delete", data={})
    assert refused.status_code == 403 and await _live_keys(app, user.user_id) == ["active"]
    response = await client.post(f"/keys/{key.id}/delete", data={"csrf_token": user.csrf})
    assert response.status_code == 303 and await _live_keys(app, user.user_id) == []


async def test_another_users_key_is_not_found_and_unchanged(web: App) -> None:
    app, client = web
    owner = await web_signup(client, app)
    await client.post("/keys", data={"csrf_token": owner.csrf, "name": "mine"})
    from gateway import keys

    async with ctx(app).sessions() as session:
        key = (await keys.list_keys(session, user_id=owner.user_id))[0]
    async with other_client(app) as browser:
        intruder = await web_signup(browser, app)
        assert "mine" not in text_of(await browser.get("/keys"))
        assert (await browser.get(f"/keys/{key.id}/delete")).status_code == 404
        for path, data in [(f"/keys/{key.id}/delete", {}), (f"/keys/{key.id}/status", {"status": "disabled"})]:
            response = await browser.post(path, data={"csrf_token": intruder.csrf, **data})
            assert response.status_code == 404
    assert await _live_keys(app, owner.user_id) == ["active"]


async def test_an_amount_too_large_to_store_is_a_field_error_not_a_500(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    for amount in ("99999999999999999999999", "1e30"):
        response = await client.post("/keys", data={"csrf_token": user.csrf, "name": "x", "monthly_limit_usd": amount})
        assert response.status_code == 400
        assert 'id="e-monthly_limit_usd">monthly_limit_usd must be at most 1000000.00 USD.' in response.text
    assert await _live_keys(app, user.user_id) == []
