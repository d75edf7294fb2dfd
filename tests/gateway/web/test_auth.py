"""/, /signup, /login, /logout and the headers and redirects every page shares."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from gateway.auth.sessions import COOKIE_NAME
from gateway.web.security import safe_next
from tests.support.control_plane import PASSWORD
from tests.support.web import other_client, text_of, web_signup

App = tuple[Starlette, httpx.AsyncClient]
PAGES = ["/dashboard", "/keys", "/billing", "/usage", "/usage.csv", "/models", "/playground", "/logout"]


async def test_root_sends_anonymous_to_login_and_members_to_the_dashboard(web: App) -> None:
    app, client = web
    response = await client.get("/")
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    await web_signup(client, app)
    response = await client.get("/")
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard")


@pytest.mark.parametrize("path", PAGES)
async def test_anonymous_visitors_are_sent_to_login_with_next(web: App, path: str) -> None:
    _, client = web
    response = await client.get(path + "?model=x")
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}%3Fmodel%3Dx"


async def test_signup_creates_a_free_account_sets_the_cookie_and_lands_on_the_dashboard(web: App) -> None:
    _, client = web
    page = await client.get("/signup")
    assert page.status_code == 200
    for label in ("Email", "Password", "Name"):
        assert f'">{label}</label>' in page.text
    response = await client.post("/signup", data={"email": "New@Example.com", "password": PASSWORD, "name": "Ada"})
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    dashboard = text_of(await client.get("/dashboard"))
    assert "Balance $1.00" in dashboard and "Plan free" in dashboard and "new@example.com" in dashboard


async def test_signup_errors_are_shown_next_to_their_field(web: App) -> None:
    app, client = web
    response = await client.post("/signup", data={"email": "not-an-email", "password": PASSWORD})
    assert response.status_code == 400
    assert 'id="e-email">email is not a valid email address.' in response.text
    assert 'aria-invalid="true" aria-describedby="e-email"' in response.text
    assert COOKIE_NAME not in response.headers.get("set-cookie", "")
    response = await client.post("/signup", data={"email": "ok@example.com", "password": "short"})
    assert 'id="e-password">password must be at least 8 characters.' in response.text
    await web_signup(client, app, "taken@example.com")
    async with other_client(app) as second:
        response = await second.post("/signup", data={"email": "taken@example.com", "password": PASSWORD})
    assert 'id="e-email">An account with this email already exists.' in response.text


async def test_login_goes_to_a_same_site_next_and_never_off_site(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    async with other_client(app) as browser:
        wrong = await browser.post("/login", data={"email": user.email, "password": "wrong-password"})
        assert wrong.status_code == 400 and "Incorrect email or password." in wrong.text
        response = await browser.post("/login?next=/usage%3Fstatus%3Derror",
                                      data={"email": user.email, "password": PASSWORD})
        assert (response.status_code, response.headers["location"]) == (303, "/usage?status=error")
        for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
            response = await browser.post("/login", data={"email": user.email, "password": PASSWORD, "next": evil})
            assert response.headers["location"] == "/dashboard", evil


def test_safe_next_keeps_only_paths_of_this_site() -> None:
    assert safe_next("/keys?x=1") == "/keys?x=1"
    for bad in (None, "", "keys", "//a.example", "/\\a.example", "http://a.example/", "/ok\r\nSet-Cookie: x"):
        assert safe_next(bad) == "/dashboard"


async def test_login_shares_the_api_throttle(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    async with other_client(app) as browser:
        for _ in range(5):
            await browser.post("/api/auth/login", json={"email": user.email, "password": "wrong-password"})
        response = await browser.post("/login", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed logins; try again in" in text_of(response)


async def test_a_cross_site_login_or_signup_post_is_refused(web: App) -> None:
    _, client = web
    for path in ("/signup", "/login"):
        response = await client.post(path, data={"email": "x@example.com", "password": PASSWORD},
                                     headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 403
        response = await client.post(path, data={"email": "x@example.com", "password": PASSWORD},
                                     headers={"Origin": "https://evil.example"})
        assert response.status_code == 403
    assert (await client.get("/api/auth/me")).status_code == 401


async def test_logout_needs_the_csrf_token_and_then_ends_the_session(web: App) -> None:
    app, client = web
    user = await web_signup(client, app)
    refused = await client.post("/logout", data={})
    assert refused.status_code == 403
    assert (await client.get("/dashboard")).status_code == 200
    response = await client.post("/logout", data={"csrf_token": user.csrf})
    assert (response.status_code, response.headers["location"]) == (303, "/login")
    assert (await client.get("/dashboard")).status_code == 303


async def test_pages_carry_the_security_headers_and_no_inline_script(web: App) -> None:
    app, client = web
    await web_signup(client, app)
    for path in ("/login", "/dashboard", "/keys", "/playground"):
        response = await client.get(path)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cache-control"] == "no-store"
        assert "<script>" not in response.text and " on" + "click=" not in response.text
        assert all(tag.count(" src=") == 1 for tag in response.text.split("<script")[1:])


async def test_static_files_are_served_with_htmx_pinned(web: App) -> None:
    _, client = web
    page = await client.get("/login")
    assert '<script src="/static/htmx-2.0.11.min.js" defer>' in page.text
    htmx = await client.get("/static/htmx-2.0.11.min.js")
    assert htmx.status_code == 200 and htmx.text.startswith("var htmx=function()")
    for asset in ("app.css", "app.js"):
        assert (await client.get(f"/static/{asset}")).status_code == 200


async def test_sec_fetch_site_decides_when_present(web: App) -> None:
    """A proxy that rewrites Host must not break same-origin posts from a current browser."""
    _, client = web
    response = await client.post("/signup", data={"email": "proxied@example.com", "password": PASSWORD},
                                 headers={"Sec-Fetch-Site": "same-origin", "Origin": "https://public.example"})
    assert response.status_code == 303
