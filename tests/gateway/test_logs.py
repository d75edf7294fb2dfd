"""No secrets in logs: failed SQL never shows its bound values, and a fuzz run of bad inputs leaves no
password, argon2 hash, API key, key HMAC or JWT in any log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from gateway.db.models import ApiKey, User
from gateway.logs import configure_logging, scrub
from tests.support.control_plane import PASSWORD, create_key, ctx, make_admin, signup, use_cheap_passwords

App = tuple[Starlette, httpx.AsyncClient]
SECRET_PASSWORD = "hunter2-correct-horse-unique-7731"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The gateway's own logging set-up (JSON, DEBUG) writing into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    yield buffer
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_scrub_removes_secret_shaped_tokens() -> None:
    text = ("hash $argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA key sk-pr-live-AbC123xyz "
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl hmac " + "ab" * 32)
    cleaned = scrub(text)
    for secret in ("$argon2id$", "sk-pr-live-AbC", "eyJhbGci", "ab" * 32):
        assert secret not in cleaned
    assert cleaned.count("[redacted]") == 4


async def test_a_failed_statement_is_logged_without_its_values(
        sessions: async_sessionmaker[AsyncSession], log_output: io.StringIO) -> None:
    # failing input 16: the failed INSERT was logged with the email and the argon2 hash
    values = {"id": "u1", "email": "leak@example.com", "name": "x", "password_hash": "$argon2id$v=19$secrethash",
              "role": "user", "status": "active"}
    async with sessions() as session:
        await session.execute(sa.insert(User).values(**values))
        await session.commit()
    duplicate = {**values, "email": "other@example.com"}  # same id: the INSERT fails
    with pytest.raises(Exception) as caught:
        async with sessions() as session:
            await session.execute(sa.insert(User).values(**duplicate))
            await session.commit()
    logging.getLogger("pr.errors").error("unhandled error", exc_info=caught.value)
    output = log_output.getvalue()
    assert "IntegrityError" in output and "INSERT INTO users" in output
    for secret in ("leak@example.com", "other@example.com", "secrethash", "$argon2id$"):
        assert secret not in output, output


async def test_a_fuzz_run_of_bad_inputs_logs_no_secret(app_client: App, log_output: io.StringIO) -> None:
    app, client = app_client
    use_cheap_passwords(app)
    admin = await make_admin(app, client)
    login = await signup(client, "fuzz@example.com", password=SECRET_PASSWORD)
    raw_key, _ = await create_key(client, login)
    bad_strings = ["\u0000", "a\u0000b", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"), "x" * 5000,
                   "' OR 1=1 --", "9" * 40, "-1", "1e18", "NaN", "9999-12-31T23:59:59-01:00"]
    for bad in bad_strings:
        q = quote(bad, safe="")
        requests = [
            ("POST", "/api/auth/signup", {"email": f"f{len(bad)}@example.com", "password": SECRET_PASSWORD,
                                          "name": bad}, None),
            ("POST", "/api/auth/signup", {"email": bad, "password": SECRET_PASSWORD}, None),
            ("POST", "/api/auth/login", {"email": bad, "password": SECRET_PASSWORD}, None),
            ("POST", "/api/keys", {"name": bad}, login.headers),
            ("POST", "/api/keys", {"name": "k", "expires_at": bad, "monthly_limit_usd": bad}, login.headers),
            ("PATCH", f"/api/keys/{q}", {"name": "k"}, login.headers),
            ("GET", f"/api/usage?model={q}&since={q}&offset={q}", None, login.headers),
            ("GET", f"/api/admin/users?q={q}&offset={q}", None, admin.headers),
            ("POST", f"/api/admin/users/{login.user_id}/credits", {"amount_usd": bad, "note": bad}, admin.headers),
            ("POST", "/v1/chat/completions", {"model": bad, "messages": [{"role": "user", "content": bad}]},
             {"Authorization": f"Bearer {raw_key}"}),
        ]
        for method, path, body, headers in requests:
            await client.request(method, path, json=body, headers=headers)
    await client.post("/api/auth/login", json={"email": "fuzz@example.com", "password": SECRET_PASSWORD})
    async with ctx(app).sessions() as session:
        hashes = list((await session.execute(sa.select(User.password_hash))).scalars())
        key_hashes = list((await session.execute(sa.select(ApiKey.key_hash))).scalars())
    output = log_output.getvalue()
    assert output.count("\n") > 50  # the access log saw the run
    secrets = [SECRET_PASSWORD, PASSWORD, raw_key, login.token, admin.token, *hashes, *key_hashes]
    for secret in secrets:
        assert secret not in output, f"a secret reached the logs: {secret[:12]}..."
    assert "$argon2" not in output and "eyJ" not in output
