from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col
from starlette.applications import Starlette

from gateway import accounts
from gateway.app import create_app
from gateway.auth.sessions import issue_token
from gateway.db.models import User
from gateway.settings import Settings
from tests.conftest import envelope
from tests.support.control_plane import PASSWORD, create_key, ctx, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]


@pytest.fixture
async def api(app_client: App) -> App:
    use_cheap_passwords(app_client[0])
    return app_client


def _error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = envelope(response)
    assert error["code"] == code, error
    assert error["param"] == param, error


async def test_signup_returns_a_session_and_stores_only_an_argon2id_hash(api: App) -> None:
    app, client = api
    response = await client.post("/api/auth/signup", json={"email": "Alice@Example.com", "password": PASSWORD,
                                                           "name": "Alice"})
    assert response.status_code == 201
    body = response.json()
    assert body["token_type"] == "bearer" and body["access_token"].count(".") == 2
    user = body["user"]
    assert set(user) == {"id", "email", "name", "role", "status", "email_verified", "created_at"}
    assert (user["email"], user["name"], user["role"], user["status"]) == ("alice@example.com", "Alice", "user",
                                                                           "active")
    assert user["created_at"].endswith("Z") and "T" in user["created_at"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"pr_session={body['access_token']};")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=lax" in lowered and "max-age=3600" in lowered
    assert "secure" not in lowered.replace("samesite", "")
    async with ctx(app).sessions() as session:
        stored = (await session.execute(sa.select(col(User.password_hash)))).scalars().all()
    assert len(stored) == 1 and stored[0].startswith("$argon2id$") and PASSWORD not in stored[0]


async def test_signup_refuses_bad_fields_naming_them(api: App) -> None:
    _, client = api
    cases = [
        ({"password": PASSWORD}, "email"),
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "a@example.com" + "m" * 320, "password": PASSWORD}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": "seven77"}, "password"),
        ({"email": "a@example.com", "password": "x" * 1025}, "password"),
        ({"email": "a@example.com", "password": PASSWORD, "name": "n" * 201}, "name"),
    ]
    for body, param in cases:
        _error(await client.post("/api/auth/signup", json=body), 400, "invalid_body", param)
    _error(await client.post("/api/auth/signup", content=b"{oops"), 400, "invalid_body")


async def test_duplicate_email_is_409_whatever_the_case(api: App) -> None:
    _, client = api
    await signup(client, "bob@example.com")
    response = await client.post("/api/auth/signup", json={"email": " BOB@Example.COM", "password": PASSWORD})
    _error(response, 409, "email_taken", "email")


async def test_login_me_and_logout_with_bearer_or_cookie(api: App) -> None:
    _, client = api
    await signup(client, "carol@example.com", name="Carol")
    response = await client.post("/api/auth/login", json={"email": "Carol@example.com", "password": PASSWORD})
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert response.json()["user"]["email"] == "carol@example.com"

    me = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == "carol@example.com" and me.json()["plan_name"] == "free"
    assert (await client.get("/api/auth/me")).status_code == 200  # the cookie set by login

    logout = await client.post("/api/auth/logout", headers={"Origin": "http://testserver"})  # same-origin
    assert logout.status_code == 200 and 'pr_session=""' in logout.headers["set-cookie"]
    assert "max-age=0" in logout.headers["set-cookie"].lower()
    _error(await client.get("/api/auth/me"), 401, "invalid_token")


async def test_wrong_email_and_wrong_password_are_the_same_401(api: App) -> None:
    _, client = api
    await signup(client, "dave@example.com")
    wrong_password = await client.post("/api/auth/login", json={"email": "dave@example.com", "password": "x" * 12})
    unknown_email = await client.post("/api/auth/login", json={"email": "eve@example.com", "password": PASSWORD})
    for response in (wrong_password, unknown_email):
        _error(response, 401, "invalid_credentials")
    assert wrong_password.json() == unknown_email.json()
    assert "set-cookie" not in wrong_password.headers
    _error(await client.post("/api/auth/login", json={"password": PASSWORD}), 400, "invalid_body", "email")
    _error(await client.post("/api/auth/login", json={"email": "dave@example.com"}), 400, "invalid_body", "password")


async def test_repeated_failures_for_an_email_are_throttled(api: App) -> None:
    _, client = api
    await signup(client, "frank@example.com")
    for _ in range(5):
        response = await client.post("/api/auth/login", json={"email": "frank@example.com", "password": "bad-guess"})
        assert response.status_code == 401
    locked = await client.post("/api/auth/login", json={"email": "frank@example.com", "password": PASSWORD})
    _error(locked, 429, "rate_limit_exceeded")
    assert envelope(locked)["type"] == "rate_limit_error"
    assert 1 <= int(locked.headers["retry-after"]) <= 900
    other = await client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "bad-guess"})
    assert other.status_code == 401  # another email from the same address is not locked yet


async def test_repeated_failures_from_an_address_are_throttled(api: App) -> None:
    _, client = api
    for number in range(30):
        await client.post("/api/auth/login", json={"email": f"u{number}@example.com", "password": "bad-guess"})
    _error(await client.post("/api/auth/login", json={"email": "new@example.com", "password": "bad-guess"}), 429,
           "rate_limit_exceeded")


async def test_bad_tokens_are_401_invalid_token(api: App) -> None:
    app, client = api
    login = await signup(client)
    raw_key, _ = await create_key(client, login)
    secret = ctx(app).settings.jwt_secret
    header, payload, signature = login.token.split(".")
    tampered = f"{header}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    expired = issue_token(login.user_id, secret=secret, ttl_seconds=60, now=time.time() - 3600)
    foreign = issue_token(login.user_id, secret="x" * 48, ttl_seconds=60)
    unknown_user = issue_token("no-such-user", secret=secret, ttl_seconds=60)
    for authorization in [None, f"Bearer {tampered}", f"Bearer {expired}", f"Bearer {foreign}",
                          f"Bearer {unknown_user}", f"Bearer {raw_key}", "Basic abc", "Bearer "]:
        headers = {"Authorization": authorization} if authorization is not None else {}
        response = await client.get("/api/auth/me", headers=headers)
        _error(response, 401, "invalid_token")
    assert (await client.get("/api/auth/me", headers=login.headers)).status_code == 200


async def test_every_private_endpoint_requires_a_session(api: App) -> None:
    _, client = api
    for method, path in [("GET", "/api/billing/balance"), ("POST", "/api/billing/topup"),
                         ("GET", "/api/billing/transactions"), ("GET", "/api/keys"), ("POST", "/api/keys"),
                         ("PATCH", "/api/keys/x"), ("DELETE", "/api/keys/x"), ("GET", "/api/usage"),
                         ("GET", "/api/usage/summary"), ("GET", "/api/admin/users"), ("POST", "/api/admin/reload")]:
        response = await client.request(method, path, json={})
        _error(response, 401, "invalid_token")
    assert (await client.get("/api/plans")).status_code == 200  # the catalogue is public


async def test_disabled_user_cannot_log_in_and_their_tokens_stop(api: App) -> None:
    app, client = api
    login = await signup(client, "grace@example.com")
    async with ctx(app).sessions() as session:
        await accounts.set_status(session, user_id=login.user_id, status="disabled")
        await session.commit()
    _error(await client.get("/api/auth/me", headers=login.headers), 403, "account_disabled")
    _error(await client.get("/api/billing/balance", headers=login.headers), 403, "account_disabled")
    right = await client.post("/api/auth/login", json={"email": "grace@example.com", "password": PASSWORD})
    _error(right, 403, "account_disabled")
    wrong = await client.post("/api/auth/login", json={"email": "grace@example.com", "password": "bad-guess"})
    _error(wrong, 401, "invalid_credentials")


async def test_cookie_is_secure_when_configured(make_settings: Callable[..., Settings], database_url: str) -> None:
    app = create_app(make_settings(DATABASE_URL=database_url, COOKIE_SECURE="true", JWT_TTL_SECONDS="600"))
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
            response = await client.post("/api/auth/signup", json={"email": "h@example.com", "password": PASSWORD})
    cookie = response.headers["set-cookie"].lower()
    assert "; secure" in cookie and "max-age=600" in cookie


@pytest.mark.parametrize(("setting", "base_url", "peer", "forwarded", "secure"), [
    ("auto", "http://testserver", "127.0.0.1", None, False),
    ("auto", "https://testserver", "127.0.0.1", None, True),
    ("auto", "http://testserver", "10.0.0.5", "https", True),       # a trusted proxy terminated TLS
    ("auto", "http://testserver", "192.0.2.9", "https", False),     # anyone else cannot claim it
    ("false", "https://testserver", "127.0.0.1", None, False),
    ("true", "http://testserver", "127.0.0.1", None, True),
])
async def test_cookie_secure_follows_the_scheme_unless_forced(
        gateway_settings: Callable[..., Settings], setting: str, base_url: str, peer: str, forwarded: str | None,
        secure: bool) -> None:
    app = create_app(gateway_settings(COOKIE_SECURE=setting, TRUSTED_PROXIES="10.0.0.0/8"))
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        transport = httpx.ASGITransport(app=app, client=(peer, 5000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
            response = await client.post("/api/auth/signup", json={"email": "s@example.com", "password": PASSWORD},
                                         headers=headers)
            logout = await client.post("/api/auth/logout", headers={**headers, "Authorization": "Bearer x"})
    for header in (response.headers["set-cookie"], logout.headers["set-cookie"]):
        assert ("; secure" in header.lower()) is secure, header


async def test_concurrent_wrong_passwords_are_not_all_verified(api: App) -> None:
    # failing input 11: 40 concurrent wrong passwords were all verified against a limit of 5
    app, client = api
    await signup(client, "ivy@example.com")
    passwords = ctx(app).passwords
    verified = 0
    real_verify = passwords.verify

    async def counting_verify(password_hash: str | None, password: str) -> bool:
        nonlocal verified
        verified += 1
        await asyncio.sleep(0.01)  # a verification takes time; others arrive meanwhile
        return await real_verify(password_hash, password)

    passwords.verify = counting_verify  # type: ignore[method-assign]
    attempts = [{"email": "ivy@example.com", "password": f"wrong-{number}"} for number in range(39)]
    attempts.insert(20, {"email": "ivy@example.com", "password": PASSWORD})
    answers = await asyncio.gather(*(client.post("/api/auth/login", json=body) for body in attempts))
    statuses = [answer.status_code for answer in answers]
    assert verified <= 5 and statuses.count(401) + statuses.count(200) == verified
    assert statuses.count(429) == 40 - verified
    assert all(int(answer.headers["retry-after"]) >= 1 for answer in answers if answer.status_code == 429)


async def test_the_owner_logs_in_after_strangers_failed_for_their_email(api: App) -> None:
    # failing input 12: five failures from other addresses locked the owner out for 15 minutes
    app, client = api
    await signup(client, "jay@example.com")
    for number in range(6):
        stranger = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(f"192.0.2.{number}", 4000)),
                                     base_url="http://testserver")
        async with stranger:
            wrong = await stranger.post("/api/auth/login", json={"email": "jay@example.com", "password": "bad-guess"})
            assert wrong.status_code == 401
    owner = await client.post("/api/auth/login", json={"email": "jay@example.com", "password": PASSWORD})
    assert owner.status_code == 200, owner.text


async def test_sign_ups_from_one_address_are_throttled(gateway_settings: Callable[..., Settings]) -> None:
    app = create_app(gateway_settings(SIGNUPS_PER_ADDRESS="2"))
    async with app.router.lifespan_context(app):
        use_cheap_passwords(app)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for number in range(2):
                await signup(client, f"k{number}@example.com")
            refused = await client.post("/api/auth/signup", json={"email": "k9@example.com", "password": PASSWORD})
    _error(refused, 429, "rate_limit_exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 30


async def test_logout_ends_the_session_server_side(api: App) -> None:
    _, client = api
    login = await signup(client, "kim@example.com")
    other_device = await client.post("/api/auth/login", json={"email": "kim@example.com", "password": PASSWORD})
    client.cookies.clear()
    stolen = {"Authorization": f"Bearer {other_device.json()['access_token']}"}
    assert (await client.get("/api/auth/me", headers=stolen)).status_code == 200
    assert (await client.post("/api/auth/logout", headers=login.headers)).status_code == 200
    for headers in (login.headers, stolen):  # a copied token is dead too, not only the cookie
        _error(await client.get("/api/auth/me", headers=headers), 401, "invalid_token")
    again = await client.post("/api/auth/login", json={"email": "kim@example.com", "password": PASSWORD})
    assert (await client.get("/api/auth/me", headers={"Authorization": f"Bearer {again.json()['access_token']}"})
            ).status_code == 200
    assert (await client.post("/api/auth/logout", headers=login.headers)).status_code == 200  # idempotent


async def test_password_change_ends_every_other_session(api: App) -> None:
    _, client = api
    login = await signup(client, "lee@example.com")
    new = "another-long-passphrase"
    wrong = await client.post("/api/auth/password", headers=login.headers,
                              json={"current_password": "not-it-at-all", "new_password": new})
    _error(wrong, 401, "invalid_credentials", "current_password")
    short = await client.post("/api/auth/password", headers=login.headers,
                              json={"current_password": PASSWORD, "new_password": "short"})
    _error(short, 400, "invalid_body", "new_password")
    changed = await client.post("/api/auth/password", headers=login.headers,
                                json={"current_password": PASSWORD, "new_password": new})
    assert changed.status_code == 200, changed.text
    client.cookies.clear()
    _error(await client.get("/api/auth/me", headers=login.headers), 401, "invalid_token")
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    assert (await client.get("/api/auth/me", headers=fresh)).status_code == 200
    _error(await client.post("/api/auth/login", json={"email": "lee@example.com", "password": PASSWORD}), 401,
           "invalid_credentials")
    assert (await client.post("/api/auth/login", json={"email": "lee@example.com", "password": new})).status_code == 200
