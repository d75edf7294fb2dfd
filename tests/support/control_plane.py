"""Driving the /api control plane from tests: sign-ups, admins, keys and usage rows, quickly."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col
from starlette.applications import Starlette

from gateway.auth.passwords import Passwords
from gateway.billing import ledger
from gateway.context import AppContext
from gateway.db.models import UsageEvent, User, utcnow

PASSWORD = "correct-horse-battery-staple"
_numbers = itertools.count(1)


def cheap_passwords() -> Passwords:
    """argon2id with the smallest costs: the same code path, milliseconds instead of 200 ms a hash."""
    return Passwords(time_cost=1, memory_cost=1024, parallelism=1)


def use_cheap_passwords(app: Starlette) -> None:
    """Swap the running app's hasher for `cheap_passwords()` (call inside the lifespan)."""
    ctx(app).passwords = cheap_passwords()


def ctx(app: Starlette) -> AppContext:
    context: AppContext = app.state.ctx
    return context


@dataclass(frozen=True)
class Login:
    user_id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def signup(client: httpx.AsyncClient, email: str | None = None, *, password: str = PASSWORD,
                 name: str = "") -> Login:
    """Sign up through the API; the client's cookie jar is cleared so later calls authenticate explicitly."""
    email = email or f"user{next(_numbers)}-{uuid.uuid4().hex[:6]}@example.com"
    response = await client.post("/api/auth/signup", json={"email": email, "password": password, "name": name})
    assert response.status_code == 201, response.text
    client.cookies.clear()
    body = response.json()
    return Login(user_id=body["user"]["id"], email=body["user"]["email"], token=body["access_token"])


async def make_admin(app: Starlette, client: httpx.AsyncClient, email: str | None = None) -> Login:
    """A signed-up user promoted to admin in the database."""
    login = await signup(client, email)
    async with ctx(app).sessions() as session:
        await session.execute(sa.update(User).where(col(User.id) == login.user_id).values(role="admin"))
        await session.commit()
    return login


async def create_key(client: httpx.AsyncClient, login: Login, **fields: Any) -> tuple[str, dict[str, Any]]:
    """POST /api/keys; returns the raw key and the `api_key` object."""
    response = await client.post("/api/keys", headers=login.headers, json={"name": "test", **fields})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["key"], body["api_key"]


async def account_id(app: Starlette, login: Login) -> str:
    from gateway.accounts import require_member

    async with ctx(app).sessions() as session:
        return (await require_member(session, login.user_id)).account.id


async def record_usage(app: Starlette, login: Login, *, model: str = "privaterouter/fast", input_tokens: int = 14,
                       output_tokens: int = 9, cost_pico: int = 4_100_000, status: str = "success",
                       key_id: str | None = None, created_at: datetime | None = None, charge: bool = True) -> str:
    """What the data plane writes for one request: a usage event and (when charged) its ledger entry."""
    request_id = uuid.uuid4().hex
    account = await account_id(app, login)
    async with ctx(app).sessions() as session:
        session.add(UsageEvent(request_id=request_id, account_id=account, user_id=login.user_id, api_key_id=key_id,
                               model_public_name=model, endpoint="chat.completions", input_tokens=input_tokens,
                               output_tokens=output_tokens, cost_pico=cost_pico, latency_ms=412, ttft_ms=80,
                               status=status, error_code=None if status == "success" else "upstream_error",
                               created_at=created_at or utcnow()))
        if charge and cost_pico:
            await ledger.post(session, account_id=account, kind="usage", amount_pico=-cost_pico,
                              request_id=request_id)
        await session.commit()
    return request_id
