"""Email over a real local SMTP server (aiosmtpd): password reset, verification, invites, receipts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import EmailToken
from gateway.settings import Settings, SettingsError
from tests.conftest import MODELS_FILE, envelope
from tests.support.control_plane import PASSWORD, ctx, use_cheap_passwords
from tests.support.fake_stripe import SECRET_KEY, WEBHOOK_SECRET, FakeStripe, signed
from tests.support.servers import serve_app
from tests.support.smtp import Inbox, link_token, smtp_server

NEW_PASSWORD = "another-long-passphrase-42"


@dataclass
class Site:
    app: Starlette
    client: httpx.AsyncClient
    inbox: Inbox
    stripe: FakeStripe
    database_url: str

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session of the test's own (the gateway's engine belongs to its server thread's loop)."""
        engine = create_engine(self.database_url)
        try:
            async with session_factory(engine)() as session:
                yield session
        finally:
            await engine.dispose()


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with smtp_server() as server:
        yield server


def _mail_env(inbox: Inbox) -> dict[str, str]:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(inbox.port), "SMTP_SECURITY": "none",
            "SMTP_FROM": "PrivateRouter <noreply@router.example.com>", "PUBLIC_BASE_URL": "https://router.example.com"}


@pytest.fixture
async def site_factory(make_settings: Callable[..., Settings], database_url: str, inbox: Inbox,
                       tmp_path: Path) -> AsyncIterator[Callable[..., Site]]:
    """A gateway on a real socket (mail is sent after the answer, as in production) with mail configured."""
    stack = ExitStack()
    clients: list[httpx.AsyncClient] = []

    def build(**env: str) -> Site:
        fake = FakeStripe()
        stripe_url = stack.enter_context(serve_app(fake.app()))
        models = tmp_path / "models.yaml"
        models.write_text(MODELS_FILE.read_text() + "\nbilling:\n  trial:\n    credits_usd: \"2\"\n    days: 7\n")
        settings = make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models), PAYMENT_PROVIDERS="stripe",
                                 STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                                 STRIPE_API_BASE=stripe_url, **{**_mail_env(inbox), **env})
        app = create_app(settings)
        url = stack.enter_context(serve_app(app))
        use_cheap_passwords(app)
        clients.append(httpx.AsyncClient(base_url=url, timeout=20))
        return Site(app, clients[-1], inbox, fake, database_url)

    yield build
    for client in clients:
        await client.aclose()
    stack.close()


async def _signup(site: Site, email: str) -> dict[str, str]:
    response = await site.client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    site.client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def test_password_reset_by_single_use_link(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    await _signup(site, "ada@example.com")
    known = await site.client.post("/api/auth/password-reset", json={"email": "Ada@Example.com"})
    unknown = await site.client.post("/api/auth/password-reset", json={"email": "nobody@example.com"})
    assert (known.status_code, known.json()) == (unknown.status_code, unknown.json())
    assert known.status_code == 202
    message = site.inbox.wait_for(1)[0]
    assert message["To"] == "ada@example.com" and "Reset" in message["Subject"]
    token = link_token(message, "https://router.example.com/reset-password")
    weak = await site.client.post("/api/auth/password-reset/confirm", json={"token": token, "password": "short"})
    assert weak.status_code == 400 and envelope(weak)["param"] == "password"
    done = await site.client.post("/api/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD})
    assert done.status_code == 200, done.text
    again = await site.client.post("/api/auth/password-reset/confirm", json={"token": token, "password": PASSWORD})
    assert again.status_code == 400 and envelope(again)["code"] == "invalid_token"
    old = await site.client.post("/api/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    new = await site.client.post("/api/auth/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})
    assert (old.status_code, new.status_code) == (401, 200)
    assert len(site.inbox.messages) == 1  # the unknown address got nothing
    async with site.session() as session:  # only the token's hash is stored
        stored = (await session.execute(sa.select(EmailToken.token_hash))).scalars().all()
    assert token not in stored


async def test_reset_answers_before_any_mail_is_sent(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    await _signup(site, "ada@example.com")
    site.inbox.gate.clear()  # the SMTP server now stalls every message
    response = await site.client.post("/api/auth/password-reset", json={"email": "ada@example.com"})
    assert response.status_code == 202 and site.inbox.messages == []
    site.inbox.gate.set()
    assert site.inbox.wait_for(1)[0]["To"] == "ada@example.com"


async def test_expired_reset_link_is_refused(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    await _signup(site, "ada@example.com")
    await site.client.post("/api/auth/password-reset", json={"email": "ada@example.com"})
    token = link_token(site.inbox.wait_for(1)[0], "/reset-password")
    async with site.session() as session:
        await session.execute(sa.update(EmailToken).values(expires_at=EmailToken.created_at - timedelta(seconds=1)))
        await session.commit()
    response = await site.client.post("/api/auth/password-reset/confirm",
                                      json={"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 400 and envelope(response)["code"] == "invalid_token"


async def test_verification_gates_credits_and_keys(site_factory: Callable[..., Site]) -> None:
    site = site_factory(REQUIRE_EMAIL_VERIFICATION="true")
    scripted = [await _signup(site, f"bot{index}@example.com") for index in range(5)]
    for headers in scripted:  # scripted sign-ups get nothing until their address is verified
        balance = (await site.client.get("/api/billing/balance", headers=headers)).json()
        assert balance["balance_usd"] == "0.00"
    headers = scripted[0]
    refused = await site.client.post("/api/keys", headers=headers, json={"name": "k"})
    assert refused.status_code == 403 and envelope(refused)["code"] == "email_not_verified"
    site.inbox.wait_for(5)
    token = link_token(site.inbox.to("bot0@example.com")[0], "/verify-email")
    verified = await site.client.post("/api/auth/verify-email", json={"token": token})
    assert verified.status_code == 200 and verified.json()["email_verified"] is True
    balance = (await site.client.get("/api/billing/balance", headers=headers)).json()
    assert (balance["balance_usd"], balance["trial_usd"]) == ("3.00", "2.00")
    assert (await site.client.post("/api/keys", headers=headers, json={"name": "k"})).status_code == 201
    replay = await site.client.post("/api/auth/verify-email", json={"token": token})
    assert replay.status_code == 400
    resent = await site.client.post("/api/auth/verify-email/resend", headers=headers)
    assert resent.json() == {"status": "already_verified"}
    other = await site.client.post("/api/auth/verify-email/resend", headers=scripted[1])
    assert other.status_code == 202
    assert len(site.inbox.wait_for(6)) == 6


async def test_invite_mail_carries_a_working_link(site_factory: Callable[..., Site]) -> None:
    site = site_factory(SIGNUP_MODE="invite")
    from gateway import accounts

    async with site.session() as session:
        await accounts.create_user(session, ctx(site.app).registry.current, ctx(site.app).passwords,
                                   email="root@example.com", password=PASSWORD, role="admin")
        await session.commit()
    login = await site.client.post("/api/auth/login", json={"email": "root@example.com", "password": PASSWORD})
    admin = {"Authorization": f"Bearer {login.json()['access_token']}"}
    site.client.cookies.clear()
    made = await site.client.post("/api/admin/invites", headers=admin, json={"email": "guest@example.com"})
    assert made.status_code == 201 and made.json()["emailed"] is True
    message = site.inbox.wait_for(1)[0]
    assert message["To"] == "guest@example.com"
    token = link_token(message, "https://router.example.com/signup")
    joined = await site.client.post("/api/auth/signup", json={"email": "guest@example.com", "password": PASSWORD,
                                                             "invite": token})
    assert joined.status_code == 201, joined.text


async def test_receipt_after_a_payment(site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    headers = await _signup(site, "buyer@example.com")
    link = (await site.client.post("/api/billing/checkout", headers=headers, json={"amount_usd": "25"})).json()
    payload, signature = signed(site.stripe.completed(link["session_id"], event_id="evt_1"))
    hook = await site.client.post("/api/billing/stripe/webhook", content=payload,
                                  headers={"Stripe-Signature": signature})
    assert hook.json()["outcome"] == "credited"
    receipt = site.inbox.wait_for(1)[0]
    assert receipt["To"] == "buyer@example.com" and "receipt" in receipt["Subject"]
    body = receipt.get_content()
    assert "Credited: 25.00 USD" in body and link["payment_id"] in body and "Balance now: 28.00 USD" in body


async def test_without_smtp_the_flows_say_so(make_settings: Callable[..., Settings], database_url: str) -> None:
    from tests.support.running import running

    async with running(make_settings(DATABASE_URL=database_url)) as (_, client):
        response = await client.post("/api/auth/password-reset", json={"email": "a@example.com"})
        assert response.status_code == 503 and envelope(response)["code"] == "email_disabled"
        signup = await client.post("/api/auth/signup", json={"email": "a@example.com", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {signup.json()['access_token']}"}
        resend = await client.post("/api/auth/verify-email/resend", headers=headers)
        assert resend.status_code == 503


@pytest.mark.parametrize("env, name", [
    ({"REQUIRE_EMAIL_VERIFICATION": "true"}, "SMTP_HOST"),
    ({"SMTP_HOST": "127.0.0.1"}, "SMTP_FROM"),
])
def test_mail_settings_are_checked(make_settings: Callable[..., Settings], env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        make_settings(**env)


async def test_reset_requests_are_throttled_alike_for_known_and_unknown_addresses(
        site_factory: Callable[..., Site]) -> None:
    site = site_factory()
    await _signup(site, "ada@example.com")
    for email in ("ada@example.com", "nobody@example.com"):
        answers = [await site.client.post("/api/auth/password-reset", json={"email": email}) for _ in range(6)]
        assert [answer.status_code for answer in answers] == [202] * 5 + [429], email
        assert envelope(answers[-1])["code"] == "rate_limit_exceeded" and int(answers[-1].headers["retry-after"]) > 0
    assert len(site.inbox.wait_for(5)) == 5
    assert {message["To"] for message in site.inbox.messages} == {"ada@example.com"}


async def test_turning_verification_on_later_never_pays_starter_credits_twice(
        site_factory: Callable[..., Site]) -> None:
    before = site_factory()
    headers = await _signup(before, "early@example.com")  # credited at sign-up: $1 + $2 trial
    after = site_factory(REQUIRE_EMAIL_VERIFICATION="true")  # the operator turns verification on
    refused = await after.client.post("/api/keys", headers=headers, json={"name": "k"})
    assert refused.status_code == 403
    assert (await after.client.post("/api/auth/verify-email/resend", headers=headers)).status_code == 202
    token = link_token(after.inbox.wait_for(1)[0], "/verify-email")
    assert (await after.client.post("/api/auth/verify-email", json={"token": token})).status_code == 200
    balance = (await after.client.get("/api/billing/balance", headers=headers)).json()
    assert (balance["balance_usd"], balance["trial_usd"]) == ("3.00", "2.00")
    assert (await after.client.post("/api/keys", headers=headers, json={"name": "k"})).status_code == 201
