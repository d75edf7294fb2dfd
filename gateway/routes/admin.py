"""The operator's API (`/api/admin/*`): users, credits, plans, status, stats, nodes and reload.

Every handler starts with `require_admin`, which refuses callers outside ADMIN_ALLOWED_CIDRS
before it looks at the token.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import accounts
from gateway import admin as operators
from gateway.admin import UserRow
from gateway.auth.deps import require_admin
from gateway.context import context
from gateway.errors import GatewayError
from gateway.fields import FieldError, iso, parse_int, usd
from gateway.http import JSONResponse, read_json
from gateway.registry import RegistryError
from gateway.routes.auth import user_json
from gateway.routes.billing import balance_json
from gateway.usage_report import time_range

MAX_PAGE = 100


def member_json(row: UserRow) -> dict[str, Any]:
    return {**user_json(row.member.user), **balance_json(row.member.account), "account_id": row.member.account.id,
            "usage_30d": {"requests": row.requests_30d, "cost_usd": usd(row.cost_30d_pico)}}


async def list_users(request: Request) -> Response:
    """Users, newest first, optionally those whose email contains `email`; with balance and 30-day usage."""
    await require_admin(request)
    params = request.query_params
    limit = parse_int(params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(params.get("offset"), param="offset", default=0, minimum=0)
    async with context(request).sessions() as session:
        total, rows = await operators.search_users(session, email=params.get("email"), limit=limit, offset=offset)
    return JSONResponse({"items": [member_json(row) for row in rows], "total": total, "limit": limit,
                         "offset": offset})


async def _respond_with_member(request: Request, user_id: str) -> Response:
    async with context(request).sessions() as session:
        row = await operators.user_row(session, user_id)
    return JSONResponse(member_json(row))


async def get_user(request: Request) -> Response:
    await require_admin(request)
    return await _respond_with_member(request, request.path_params["user_id"])


async def adjust_credits(request: Request) -> Response:
    """Credit or debit an account (`admin_adjust`); a debit below the free balance is refused."""
    actor = await require_admin(request)
    body = await read_json(request)
    if "amount_usd" not in body:
        raise FieldError('amount_usd is required, e.g. "+5.00" or "-2.50".', param="amount_usd")
    user_id = request.path_params["user_id"]
    async with context(request).sessions() as session:
        await operators.adjust_credits(session, user_id=user_id, amount=body["amount_usd"], note=body.get("note"),
                                   actor_user_id=actor.user.id)
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
    ctx = context(request)
    async with ctx.sessions() as session:
        await operators.set_user_status(session, user_id=user_id, status=status, actor_user_id=admin.user.id)
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
    since = since or until - operators.USAGE_WINDOW
    if since >= until:
        raise FieldError("since must be earlier than until.", param="since")
    async with context(request).sessions() as session:
        found = await operators.stats(session, since=since, until=until)
    return JSONResponse({
        "since": iso(since), "until": iso(until), "users": found.users, "new_users": found.new_users,
        "active_users": found.active_users, "requests": found.requests, "errors": found.errors,
        "input_tokens": found.input_tokens, "output_tokens": found.output_tokens,
        "revenue_usd": usd(found.revenue_pico), "topups_usd": usd(found.topups_pico),
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
    return JSONResponse({"status": "reloaded", "diff": diff})


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
