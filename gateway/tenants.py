"""Provisioning a tenant directly in the database: a user, an account with credits and one live API
key. For the demo, tests and benchmarks (no password login: the user's password hash is unusable)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth.apikeys import hash_key, key_prefix, mint_key
from gateway.billing import ledger
from gateway.db.models import Account, ApiKey, User

NO_LOGIN = "!no-password-login"  # not an argon2 hash: verifying it always fails


@dataclass(frozen=True)
class Tenant:
    user_id: str
    account_id: str
    key_id: str
    api_key: str  # the raw key: shown once, only its HMAC is stored


async def create_key(session: AsyncSession, *, user_id: str, account_id: str, secret: str, name: str = "default",
                     monthly_limit_pico: int | None = None, allowed_models: list[str] | None = None,
                     rpm: int | None = None) -> tuple[str, str]:
    """Add a live API key for the account; return (key id, raw key). Does not commit."""
    key_id, raw = str(uuid.uuid4()), mint_key()
    session.add(ApiKey(id=key_id, user_id=user_id, account_id=account_id, name=name, key_prefix=key_prefix(raw),
                       key_hash=hash_key(raw, secret), monthly_limit_pico=monthly_limit_pico,
                       allowed_models=allowed_models, rpm=rpm))
    return key_id, raw


async def create_tenant(session: AsyncSession, *, secret: str, plan: str, credits_pico: int, email: str | None = None,
                        name: str = "", note: str | None = None, key_name: str = "default",
                        monthly_limit_pico: int | None = None, allowed_models: list[str] | None = None,
                        rpm: int | None = None) -> Tenant:
    """A user, an account on `plan` granted `credits_pico` through the ledger, and one API key. Commits."""
    user_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
    session.add(User(id=user_id, email=email or f"{user_id}@example.com", name=name, password_hash=NO_LOGIN))
    await session.flush()
    session.add(Account(id=account_id, user_id=user_id, plan_name=plan))
    await session.flush()
    key_id, raw = await create_key(session, user_id=user_id, account_id=account_id, secret=secret, name=key_name,
                                   monthly_limit_pico=monthly_limit_pico, allowed_models=allowed_models, rpm=rpm)
    if credits_pico:
        await ledger.post(session, account_id=account_id, kind="grant", amount_pico=credits_pico, note=note)
    await session.commit()
    return Tenant(user_id, account_id, key_id, raw)
