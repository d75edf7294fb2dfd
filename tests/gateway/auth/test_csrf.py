"""CSRF: a cookie-authenticated state change must be same-origin JSON; Bearer calls are unaffected."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request

from gateway.app import create_app
from gateway.auth.csrf import check_cookie_request
from gateway.auth.sessions import COOKIE_NAME
from gateway.errors import GatewayError
from gateway.settings import Settings
from tests.conftest import envelope
from tests.support.control_plane import Login, make_admin, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]
EVIL = "https://evil.example"
SAME = "http://testserver"


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


def _cookie(login: Login) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={login.token}"}


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert envelope(response)["code"] == "csrf_rejected"


async def test_foreign_text_plain_topup_with_only_the_cookie_is_refused(api: App) -> None:
    # failing input 10: text/plain from a foreign origin carrying only the cookie topped up the account
    _, client = api
    login = await signup(client)
    headers = {**_cookie(login), "Content-Type": "text/plain", "Origin": EVIL}
    _refused(await client.post("/api/billing/topup", content=b'{"amount_usd":500}', headers=headers))
    _refused(await client.post("/api/keys", content=b'{"name":"x"}', headers=headers))
    form = {**_cookie(login), "Content-Type": "application/x-www-form-urlencoded", "Origin": SAME}
    _refused(await client.post("/api/billing/topup", content=b"amount_usd=500", headers=form))
    balance = await client.get("/api/billing/balance", headers=login.headers)
    assert balance.json()["balance_usd"] == "1.00"


async def test_cookie_json_needs_a_same_origin_proof(api: App) -> None:
    _, client = api
    login = await signup(client)
    body = {"amount_usd": 10}
    _refused(await client.post("/api/billing/topup", json=body, headers={**_cookie(login), "Origin": EVIL}))
    _refused(await client.post("/api/billing/topup", json=body, headers={**_cookie(login), "Origin": "null"}))
    _refused(await client.post("/api/billing/topup", json=body, headers=_cookie(login)))  # neither header
    _refused(await client.post("/api/billing/topup", json=body,
                               headers={**_cookie(login), "Sec-Fetch-Site": "cross-site"}))
    _refused(await client.post("/api/billing/topup", json=body,
                               headers={**_cookie(login), "Sec-Fetch-Site": "same-site", "Origin": SAME}))
    ok = await client.post("/api/billing/topup", json=body, headers={**_cookie(login), "Origin": SAME})
    assert ok.status_code == 200, ok.text
    ok = await client.post("/api/billing/topup", json=body, headers={**_cookie(login), "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["balance_usd"] == "21.00"


async def test_safe_methods_with_the_cookie_need_no_proof(api: App) -> None:
    _, client = api
    login = await signup(client)
    assert (await client.get("/api/billing/balance", headers={**_cookie(login), "Origin": EVIL})).status_code == 200


async def test_delete_and_patch_with_the_cookie_are_checked(api: App) -> None:
    _, client = api
    login = await signup(client)
    created = await client.post("/api/keys", json={"name": "k"}, headers=login.headers)
    key_id = created.json()["api_key"]["id"]
    _refused(await client.delete(f"/api/keys/{key_id}", headers={**_cookie(login), "Origin": EVIL}))
    _refused(await client.patch(f"/api/keys/{key_id}", json={"name": "n"}, headers={**_cookie(login), "Origin": EVIL}))
    deleted = await client.delete(f"/api/keys/{key_id}", headers={**_cookie(login), "Origin": SAME})
    assert deleted.status_code == 200, deleted.text


async def test_admin_actions_with_an_admins_cookie_are_refused_cross_site(api: App) -> None:
    app, client = api
    admin = await make_admin(app, client)
    victim = await signup(client)
    headers = {**_cookie(admin), "Content-Type": "text/plain", "Origin": EVIL}
    _refused(await client.post(f"/api/admin/users/{victim.user_id}/credits",
                               content=b'{"amount_usd":"1000","note":"x"}', headers=headers))
    _refused(await client.post(f"/api/admin/users/{victim.user_id}/disable", content=b"{}", headers=headers))
    me = await client.get("/api/auth/me", headers=victim.headers)
    assert me.status_code == 200 and me.json()["status"] == "active"


async def test_bearer_calls_are_not_affected(api: App) -> None:
    _, client = api
    login = await signup(client)
    response = await client.post("/api/billing/topup", content=b'{"amount_usd":10}',
                                 headers={**login.headers, "Content-Type": "text/plain", "Origin": EVIL})
    assert response.status_code == 200, response.text


async def test_logout_with_the_cookie_is_checked_too(api: App) -> None:
    _, client = api
    login = await signup(client)
    _refused(await client.post("/api/auth/logout", headers={**_cookie(login), "Origin": EVIL}))


async def test_origin_behind_a_trusted_https_proxy(make_settings: Callable[..., Settings], database_url: str) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url, TRUSTED_PROXIES="127.0.0.0/8",
                                   PAYMENT_PROVIDERS="mock"))
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.example") as client:
            login = await signup(client)
            proxied = {**_cookie(login), "X-Forwarded-Proto": "https"}
            _refused(await client.post("/api/billing/topup", json={"amount_usd": 10},
                                       headers={**proxied, "Origin": "http://gw.example"}))
            ok = await client.post("/api/billing/topup", json={"amount_usd": 10},
                                   headers={**proxied, "Origin": "https://gw.example"})
            assert ok.status_code == 200, ok.text


def _request(path: str, headers: dict[str, str], method: str = "POST") -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return Request({"type": "http", "method": method, "path": path, "headers": raw, "scheme": "http",
                    "client": ("127.0.0.1", 1), "server": ("gw", 80), "query_string": b""})


def test_the_check_covers_the_json_api_only() -> None:
    form = {"Host": "gw", "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "3",
            "Origin": "http://gw"}
    check_cookie_request(_request("/keys", form), ())  # an HTML page: its own form token applies
    with pytest.raises(GatewayError) as caught:
        check_cookie_request(_request("/api/keys", form), ())
    assert caught.value.code == "csrf_rejected"
    check_cookie_request(_request("/api/keys", {"Host": "gw", "Content-Type": "application/json",
                                                "Content-Length": "2", "Origin": "http://gw:80"}), ())
