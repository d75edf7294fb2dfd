"""API key management for their owner: create (the raw key is returned once), list, change, soft-delete.

A user only ever sees their own keys: every query filters on the owner, so another user's key id
is indistinguishable from an unknown one. A deleted key keeps its row (usage history points to it)
but is never listed and never resolves.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from gateway.accounts import Member
from gateway.auth.apikeys import hash_key, key_prefix, mint_key
from gateway.db.models import Account, ApiKey, utcnow
from gateway.errors import GatewayError
from gateway.fields import FieldError, parse_time, parse_usd
from gateway.registry import Registry

MAX_KEYS_PER_USER = 50
MAX_NAME_LENGTH = 100
MAX_RPM = 1_000_000
DEFAULT_NAME = "default"
MUTABLE = ("name", "status", "monthly_limit_usd", "allowed_models", "expires_at", "rpm")
CREATABLE = ("name", "monthly_limit_usd", "allowed_models", "expires_at", "rpm")


class KeyNotFound(GatewayError):
    """No such key among the caller's live keys (404; another user's key looks exactly like this)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(404, "not_found", f"No API key with id '{key_id}'.")


def parse_key_fields(body: dict[str, Any], registry: Registry, *, creating: bool) -> dict[str, Any]:
    """Validated column values from a create or PATCH body; FieldError naming the bad field."""
    allowed = CREATABLE if creating else MUTABLE
    for field in body:
        if field not in allowed:
            raise FieldError(f"Unknown field '{field}'; allowed: {', '.join(allowed)}.", param=field)
    values: dict[str, Any] = {}
    if "name" in body or creating:
        values["name"] = _name(body.get("name", DEFAULT_NAME))
    if "status" in body:
        if body["status"] not in ("active", "disabled"):
            raise FieldError("status must be 'active' or 'disabled' (use DELETE to delete a key).", param="status")
        values["status"] = body["status"]
    if "monthly_limit_usd" in body:
        values["monthly_limit_pico"] = _limit(body["monthly_limit_usd"])
    if "allowed_models" in body:
        values["allowed_models"] = _models(body["allowed_models"], registry)
    if "expires_at" in body:
        values["expires_at"] = _expiry(body["expires_at"])
    if "rpm" in body:
        values["rpm"] = _rpm(body["rpm"])
    return values


def _name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError("name must be a non-empty string.", param="name")
    if len(value.strip()) > MAX_NAME_LENGTH:
        raise FieldError(f"name must be at most {MAX_NAME_LENGTH} characters.", param="name")
    return value.strip()


def _limit(value: object) -> int | None:
    if value is None:
        return None
    pico = parse_usd(value, param="monthly_limit_usd")
    if pico < 0:
        raise FieldError("monthly_limit_usd must not be negative.", param="monthly_limit_usd")
    return pico


def _models(value: object, registry: Registry) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise FieldError("allowed_models must be a non-empty list of model names or null.", param="allowed_models")
    unknown = [name for name in value if name not in registry.models]
    if unknown:
        raise FieldError(f"allowed_models names unknown models: {', '.join(unknown)}.", param="allowed_models")
    return list(dict.fromkeys(value))


def _expiry(value: object) -> datetime | None:
    if value is None:
        return None
    moment = parse_time(value, param="expires_at")
    if moment <= datetime.now(UTC):
        raise FieldError("expires_at must be in the future.", param="expires_at")
    return moment


def _rpm(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RPM:
        raise FieldError(f"rpm must be an integer from 1 to {MAX_RPM}, or null.", param="rpm")
    return value


async def create_key(session: AsyncSession, *, member: Member, secret: str, values: dict[str, Any]) -> tuple[str,
                                                                                                            ApiKey]:
    """Mint a key for the member; returns (raw key, row). At most MAX_KEYS_PER_USER live keys."""
    accounts = Account.__table__  # type: ignore[attr-defined]
    # Touching the account row first serialises concurrent creations for one user (row lock on
    # PostgreSQL, the write lock on SQLite), so the count below cannot be overtaken.
    await session.execute(sa.update(accounts).where(accounts.c.id == member.account.id).values(updated_at=utcnow()))
    live = await session.scalar(
        sa.select(sa.func.count()).select_from(ApiKey)
        .where(col(ApiKey.user_id) == member.user.id, col(ApiKey.status) != "deleted")
    )
    if (live or 0) >= MAX_KEYS_PER_USER:
        raise FieldError(f"At most {MAX_KEYS_PER_USER} API keys per user; delete one first.",
                         code="too_many_keys", status=409)
    raw = mint_key()
    key = ApiKey(id=str(uuid.uuid4()), user_id=member.user.id, account_id=member.account.id,
                 key_prefix=key_prefix(raw), key_hash=hash_key(raw, secret), **values)
    session.add(key)
    await session.flush()
    return raw, key


async def list_keys(session: AsyncSession, *, user_id: str) -> list[ApiKey]:
    """The user's keys that are not deleted, newest first."""
    result = await session.execute(
        sa.select(ApiKey).where(col(ApiKey.user_id) == user_id, col(ApiKey.status) != "deleted")
        .order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
    )
    return list(result.scalars())


async def get_key(session: AsyncSession, *, user_id: str, key_id: str) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None or key.user_id != user_id or key.status == "deleted":
        raise KeyNotFound(key_id)
    return key


async def update_key(session: AsyncSession, *, user_id: str, key_id: str, values: dict[str, Any]) -> ApiKey:
    """Apply validated changes to one of the user's keys."""
    key = await get_key(session, user_id=user_id, key_id=key_id)
    for column, value in values.items():
        setattr(key, column, value)
    key.updated_at = utcnow()
    await session.flush()
    return key


async def delete_key(session: AsyncSession, *, user_id: str, key_id: str) -> ApiKey:
    """Soft-delete: the row stays for usage history; the key never lists or resolves again."""
    return await update_key(session, user_id=user_id, key_id=key_id, values={"status": "deleted"})


async def key_names(session: AsyncSession, *, user_id: str) -> dict[str, str]:
    """id -> name of every key the user ever had, deleted ones included (their usage still names them)."""
    rows = await session.execute(sa.select(col(ApiKey.id), col(ApiKey.name)).where(col(ApiKey.user_id) == user_id))
    return {key_id: name for key_id, name in rows.all()}


def month_spend_pico(key: ApiKey, month: str) -> int:
    """What the key spent in `month` ("YYYY-MM"); its counter belongs to the month it was last charged in."""
    return key.spend_pico if key.spend_month == month else 0
