"""The operator's API (`/api/admin/*`): users, credits, plans, status, stats, nodes and reload.

Every handler starts with `require_admin`, which refuses callers outside ADMIN_ALLOWED_CIDRS
before it looks at the token.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import accounts
from gateway.accounts import Member
from gateway.auth.deps import require_admin
from gateway.billing.ledger import InsufficientBalance
from gateway.capabilities import confirm_claims
from gateway.context import context
from gateway.db.models import Account, CreditTransaction, UsageEvent, User
from gateway.errors import GatewayError
from gateway.fields import FieldError, iso, parse_int, parse_usd, usd
from gateway.http import JSONResponse, read_json
from gateway.registry import RegistryError
from gateway.routes.auth import user_json
from gateway.routes.billing import balance_json
from gateway.routes.usage import time_range

USAGE_WINDOW = timedelta(days=30)
MAX_PAGE = 100
MAX_NOTE_LENGTH = 500


def member_json(member: Member, usage: tuple[int, int] = (0, 0)) -> dict[str, Any]:
    requests, cost_pico = usage
    return {**user_json(member.user), **balance_json(member.account), "account_id": member.account.id,
            "usage_30d": {"requests": requests, "cost_usd": usd(cost_pico)}}


async def _usage_30d(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    if not account_ids:
        return {}
    rows = await session.execute(
        sa.select(col(UsageEvent.account_id), sa.func.count(), sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0))
        .where(col(UsageEvent.account_id).in_(account_ids),
               col(UsageEvent.created_at) >= datetime.now(UTC) - USAGE_WINDOW)
        .group_by(col(UsageEvent.account_id))
    )
    return {account_id: (int(requests), int(cost)) for account_id, requests, cost in rows.all()}


def _like(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_users(request: Request) -> Response:
    """Users, newest first, optionally those whose email contains `email`; with balance and 30-day usage."""
    await require_admin(request)
    params = request.query_params
    limit = parse_int(params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(params.get("offset"), param="offset", default=0, minimum=0)
    conditions = []
    if params.get("email"):
        conditions.append(col(User.email).like(_like(params["email"].strip().lower()), escape="\\"))
    async with context(request).sessions() as session:
        total = await session.scalar(sa.select(sa.func.count()).select_from(User).where(*conditions))
        rows = (await session.execute(
            sa.select(User, Account).join(Account, col(Account.user_id) == col(User.id)).where(*conditions)
            .order_by(col(User.created_at).desc(), col(User.id)).limit(limit).offset(offset)
        )).all()
        members = [Member(user=user, account=account) for user, account in rows]
        usage = await _usage_30d(session, [member.account.id for member in members])
    items = [member_json(member, usage.get(member.account.id, (0, 0))) for member in members]
    return JSONResponse({"items": items, "total": total or 0, "limit": limit, "offset": offset})


async def _respond_with_member(request: Request, user_id: str) -> Response:
    async with context(request).sessions() as session:
        member = await accounts.require_member(session, user_id)
        usage = await _usage_30d(session, [member.account.id])
    return JSONResponse(member_json(member, usage.get(member.account.id, (0, 0))))


async def get_user(request: Request) -> Response:
    await require_admin(request)
    return await _respond_with_member(request, request.path_params["user_id"])


async def adjust_credits(request: Request) -> Response:
    """Credit or debit an account (`admin_adjust`); a debit below the free balance is refused."""
    admin = await require_admin(request)
    body = await read_json(request)
    if "amount_usd" not in body:
        raise FieldError('amount_usd is required, e.g. "+5.00" or "-2.50".', param="amount_usd")
    amount = parse_usd(body["amount_usd"], param="amount_usd", signed=True)
    if amount == 0:
        raise FieldError("amount_usd must not be zero.", param="amount_usd")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH):
        raise FieldError(f"note must be a string of at most {MAX_NOTE_LENGTH} characters.", param="note")
    user_id = request.path_params["user_id"]
    async with context(request).sessions() as session:
        member = await accounts.require_member(session, user_id)
        try:
            await accounts.post_credits(session, account_id=member.account.id, kind="admin_adjust",
                                        amount_pico=amount, note=note or None, actor_user_id=admin.user.id)
        except InsufficientBalance:
            raise FieldError(f"The account's available balance cannot cover a debit of {usd(-amount)} USD.",
                             param="amount_usd", code="insufficient_credits") from None
        await session.commit()
    return await _respond_with_member(request, user_id)


async def set_plan(request: Request) -> Response:
    admin = await require_admin(request)
    body = await read_json(request)
    grant = body.get("grant_included_credits", False)
    if not isinstance(grant, bool):
        raise FieldError("grant_included_credits must be true or false.", param="grant_included_credits")
    ctx = context(request)
    user_id = request.path_params["user_id"]
    async with ctx.sessions() as session:
        await accounts.set_plan(session, ctx.registry.current, user_id=user_id, plan=body.get("plan"),
                                grant_included_credits=grant, actor_user_id=admin.user.id)
        await session.commit()
    ctx.key_resolver.forget_user(user_id)  # cached principals carry the plan name
    return await _respond_with_member(request, user_id)


async def _set_status(request: Request, status: str) -> Response:
    admin = await require_admin(request)
    user_id = request.path_params["user_id"]
    if status == "disabled" and user_id == admin.user.id:
        raise GatewayError(400, "cannot_disable_self", "An admin cannot disable their own account.")
    ctx = context(request)
    async with ctx.sessions() as session:
        await accounts.set_status(session, user_id=user_id, status=status)
        await session.commit()
    ctx.key_resolver.forget_user(user_id)
    return await _respond_with_member(request, user_id)


async def disable_user(request: Request) -> Response:
    return await _set_status(request, "disabled")


async def enable_user(request: Request) -> Response:
    return await _set_status(request, "active")


async def stats(request: Request) -> Response:
    """Users, active users, requests, tokens, revenue (usage cost) and top-ups over a period (default 30 days)."""
    await require_admin(request)
    since, until = time_range(request.query_params)
    until = until or datetime.now(UTC)
    since = since or until - USAGE_WINDOW
    if since >= until:
        raise FieldError("since must be earlier than until.", param="since")
    created = col(UsageEvent.created_at)
    async with context(request).sessions() as session:
        users = await session.scalar(sa.select(sa.func.count()).select_from(User)
                                     .where(col(User.created_at) < until))
        new_users = await session.scalar(sa.select(sa.func.count()).select_from(User)
                                         .where(col(User.created_at) >= since, col(User.created_at) < until))
        usage = (await session.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(col(UsageEvent.account_id))),
                      sa.func.coalesce(sa.func.sum(UsageEvent.input_tokens), 0),
                      sa.func.coalesce(sa.func.sum(UsageEvent.output_tokens), 0),
                      sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0),
                      sa.func.coalesce(sa.func.sum(sa.case((col(UsageEvent.status) != "success", 1), else_=0)), 0))
            .where(created >= since, created < until)
        )).one()
        topups = await session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0))
            .where(col(CreditTransaction.kind) == "topup", col(CreditTransaction.created_at) >= since,
                   col(CreditTransaction.created_at) < until)
        )
    requests, active, tokens_in, tokens_out, revenue, errors = (int(value) for value in usage)
    return JSONResponse({
        "since": iso(since), "until": iso(until), "users": users or 0, "new_users": new_users or 0,
        "active_users": active, "requests": requests, "errors": errors, "input_tokens": tokens_in,
        "output_tokens": tokens_out, "revenue_usd": usd(revenue), "topups_usd": usd(int(topups or 0)),
    })


def _plain(value: Any) -> Any:
    """A node-pool snapshot value as JSON: dataclasses, enums, times and decimals included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return value


async def nodes(request: Request) -> Response:
    """The node pool's view of each GPU node (empty when no pool is running)."""
    await require_admin(request)
    pool = getattr(context(request), "pool", None)
    snapshot: Any = pool.snapshot() if pool is not None and hasattr(pool, "snapshot") else []
    if inspect.isawaitable(snapshot):
        snapshot = await snapshot
    return JSONResponse({"items": [_plain(node) for node in snapshot]})


async def reload(request: Request) -> Response:
    """Reload models.yaml; an invalid file is refused and the running registry stays in force."""
    await require_admin(request)
    try:
        diff = context(request).registry.reload()
    except RegistryError as exc:
        raise GatewayError(400, "registry_invalid", str(exc)) from None
    # Where the new file claims what its nodes lack (a bigger context, a kind they do not serve).
    ctx = context(request)
    warnings = await confirm_claims(ctx.registry.current, ctx.pool) if getattr(ctx, "pool", None) else []
    return JSONResponse({"status": "reloaded", "diff": diff, "warnings": warnings})


routes = [
    Route("/api/admin/users", list_users, methods=["GET"]),
    Route("/api/admin/users/{user_id}", get_user, methods=["GET"]),
    Route("/api/admin/users/{user_id}/credits", adjust_credits, methods=["POST"]),
    Route("/api/admin/users/{user_id}/plan", set_plan, methods=["POST"]),
    Route("/api/admin/users/{user_id}/disable", disable_user, methods=["POST"]),
    Route("/api/admin/users/{user_id}/enable", enable_user, methods=["POST"]),
    Route("/api/admin/stats", stats, methods=["GET"]),
    Route("/api/admin/nodes", nodes, methods=["GET"]),
    Route("/api/admin/reload", reload, methods=["POST"]),
]
