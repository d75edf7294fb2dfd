"""The pages behind the mailed links, with a real SMTP server (aiosmtpd): forgot/reset password (every
session ends), email verification (a button, not the GET) and "send the link again" on dashboard and keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway.accounts import require_member
from gateway.auth.attempts import RESETS_PER_EMAIL_PER_HOUR
from gateway.settings import Settings
from tests.conftest import MODELS_FILE
from tests.support.control_plane import PASSWORD, ctx
from tests.support.running import running
from tests.support.smtp import Inbox, link_token, smtp_server
from tests.support.web import other_client, text_of, web_signup

NEW_PASSWORD = "another-long-passphrase-42"
App = tuple[Starlette, httpx.AsyncClient]


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def mail_settings(make_settings: Callable[..., Settings], database_url: str, inbox: Inbox,
                  tmp_path: Path) -> Callable[..., Settings]:
    """Settings with mail through the local SMTP server and a 7-day $2 trial for new users."""
    models = tmp_path / "models.yaml"
    models.write_text(MODELS_FILE.read_text() + "\nbilling:\n  trial:\n    credits_usd: \"2\"\n    days: 7\n")
    return lambda **env: make_settings(
        DATABASE_URL=database_url, MODELS_FILE=str(models), SMTP_HOST="127.0.0.1", SMTP_PORT=str(inbox.port),
        SMTP_SECURITY="none", SMTP_FROM="PrivateRouter <noreply@router.example.com>",
        PUBLIC_BASE_URL="https://router.example.com", **env)


async def test_forgot_and_reset_password_end_every_session(mail_settings: Callable[..., Settings],
                                                           inbox: Inbox) -> None:
    async with running(mail_settings()) as (app, client):
        user = await web_signup(client, app)
        async with other_client(app) as anonymous:
            login_page = await anonymous.get("/login")
        assert 'href="/forgot-password">Forgot your password?</a>' in login_page.text
        assert "Forgot your password?" in text_of(await client.get("/forgot-password"))
        known = await client.post("/forgot-password", data={"email": user.email.upper()})
        unknown = await client.post("/forgot-password", data={"email": "nobody@example.com"})
        assert known.status_code == unknown.status_code == 200
        assert text_of(known) == text_of(unknown)
        assert "If an account uses this address, a reset link is on its way" in text_of(known)
        [message] = inbox.wait_for(1)
        assert message["To"] == user.email
        token = link_token(message, "https://router.example.com/reset-password")
        form = await client.get(f"/reset-password?token={token}")
        assert form.status_code == 200 and f'name="token" value="{token}"' in form.text
        short = await client.post("/reset-password", data={"token": token, "password": "short"})
        assert short.status_code == 400 and 'id="e-password"' in short.text
        async with other_client(app) as second:  # another browser, signed in before the reset
            assert (await second.post("/login", data={"email": user.email, "password": PASSWORD})).status_code == 303
            assert (await second.get("/dashboard")).status_code == 200
            done = await client.post("/reset-password", data={"token": token, "password": NEW_PASSWORD})
            assert (done.status_code, done.headers["location"]) == (303, "/login?reset=1")
            assert (await second.get("/dashboard")).status_code == 303  # its session ended
        assert (await client.get("/dashboard")).status_code == 303
        assert "every session has ended" in text_of(await client.get("/login?reset=1"))
        again = await client.post("/reset-password", data={"token": token, "password": PASSWORD})
        assert again.status_code == 400 and "This link is not valid" in text_of(again)
        old = await client.post("/login", data={"email": user.email, "password": PASSWORD})
        new = await client.post("/login", data={"email": user.email, "password": NEW_PASSWORD})
        assert (old.status_code, new.status_code) == (400, 303)  # the login form answers 400
        assert len(inbox.messages) == 1  # nothing went to the unknown address


async def test_reset_requests_are_throttled_beside_the_field(mail_settings: Callable[..., Settings],
                                                             inbox: Inbox) -> None:
    async with running(mail_settings()) as (_, client):
        for _ in range(RESETS_PER_EMAIL_PER_HOUR):
            assert (await client.post("/forgot-password", data={"email": "ada@example.com"})).status_code == 200
        locked = await client.post("/forgot-password", data={"email": "ada@example.com"})
        assert locked.status_code == 429 and 'id="e-email"' in locked.text and "try again in" in text_of(locked)
        bad = await client.post("/forgot-password", data={"email": "not-an-address"})
        assert bad.status_code == 400 and "email must be a valid email address." in text_of(bad)


async def test_forgot_password_without_mail_says_so(web: App) -> None:
    _, client = web
    page = await client.get("/forgot-password")
    assert page.status_code == 503 and "not available on this server" in text_of(page)
    assert (await client.post("/forgot-password", data={"email": "a@example.com"})).status_code == 503


async def test_verification_notice_resend_and_verify(mail_settings: Callable[..., Settings], inbox: Inbox) -> None:
    async with running(mail_settings(REQUIRE_EMAIL_VERIFICATION="true")) as (app, client):
        user = await web_signup(client, app)
        inbox.wait_for(1)
        for path in ("/dashboard", "/keys"):
            page = text_of(await client.get(path))
            assert "Verify your email address to receive your starter credits" in page, path
            assert "Send the link again" in page
        resent = await client.post("/verify-email/resend", data={"csrf_token": user.csrf, "next": "/keys"})
        assert (resent.status_code, resent.headers["location"]) == (303, "/keys?resent=1")
        assert "A new verification link is on its way" in text_of(await client.get("/keys?resent=1"))
        second = inbox.wait_for(2)[1]
        assert second["To"] == user.email
        token = link_token(second, "https://router.example.com/verify-email")
        shown = await client.get(f"/verify-email?token={token}")  # a mail scanner's GET spends nothing
        assert shown.status_code == 200 and "Verify my address" in shown.text
        assert await _balance(app, user.user_id) == 0
        done = await client.post("/verify-email", data={"token": token})
        assert (done.status_code, done.headers["location"]) == (303, "/dashboard?verified=1")
        dashboard = text_of(await client.get("/dashboard?verified=1"))
        assert "Your email address is verified." in dashboard and "Send the link again" not in dashboard
        assert "Balance $3.00" in dashboard and "$2.00 of it trial credit" in dashboard
        assert await _balance(app, user.user_id) == 3 * 10**12
        again = await client.post("/verify-email", data={"token": token})
        assert again.status_code == 400 and "This link is not valid" in text_of(again)
        forged = await client.post("/verify-email/resend", data={"next": "/keys"})
        assert forged.status_code == 403


async def _balance(app: Starlette, user_id: str) -> int:
    async with ctx(app).sessions() as session:
        return (await require_member(session, user_id)).account.balance_pico
