"""The caller's API keys (`/api/keys`): the raw key is returned once, at creation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import keys
from gateway.auth.deps import current_user
from gateway.context import AppContext, context
from gateway.db.models import ApiKey
from gateway.email_flows import require_verified
from gateway.fields import as_utc, iso, usd
from gateway.http import JSONResponse, read_json


def key_json(key: ApiKey, ctx: AppContext) -> dict[str, Any]:
    last_used = key.last_used_at
    pending = ctx.key_resolver.pending_last_used(key.id)
    if pending is not None and (last_used is None or as_utc(last_used) < pending):
        last_used = pending
    month = datetime.now(UTC).strftime("%Y-%m")
    return {
        "id": key.id,
        "name": key.name,
        "key_prefix": key.key_prefix,
        "status": key.status,
        "monthly_limit_usd": usd(key.monthly_limit_pico) if key.monthly_limit_pico is not None else None,
        "month_spend_usd": usd(keys.month_spend_pico(key, month)),
        "allowed_models": key.allowed_models,
        "rpm": key.rpm,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(last_used),
        "created_at": iso(key.created_at),
    }


async def create(request: Request) -> Response:
    member = await current_user(request)
    require_verified(context(request).settings, member.user)  # REQUIRE_EMAIL_VERIFICATION
    ctx = context(request)
    values = keys.parse_key_fields(await read_json(request), ctx.registry.current, creating=True)
    async with ctx.sessions() as session:
        raw, key = await keys.create_key(session, member=member, secret=ctx.settings.app_secret_key, values=values)
        await session.commit()
    return JSONResponse({"key": raw, "api_key": key_json(key, ctx)}, status_code=201)


async def list_(request: Request) -> Response:
    member = await current_user(request)
    ctx = context(request)
    async with ctx.sessions() as session:
        found = await keys.list_keys(session, user_id=member.user.id)
    return JSONResponse({"items": [key_json(key, ctx) for key in found]})


async def update(request: Request) -> Response:
    member = await current_user(request)
    ctx = context(request)
    key_id = request.path_params["key_id"]
    values = keys.parse_key_fields(await read_json(request), ctx.registry.current, creating=False)
    async with ctx.sessions() as session:
        key = await keys.update_key(session, user_id=member.user.id, key_id=key_id, values=values)
        await session.commit()
    ctx.key_resolver.forget_key(key.id)
    return JSONResponse(key_json(key, ctx))


async def delete(request: Request) -> Response:
    member = await current_user(request)
    ctx = context(request)
    async with ctx.sessions() as session:
        key = await keys.delete_key(session, user_id=member.user.id, key_id=request.path_params["key_id"])
        await session.commit()
    ctx.key_resolver.forget_key(key.id)
    return JSONResponse(key_json(key, ctx))


routes = [
    Route("/api/keys", create, methods=["POST"]),
    Route("/api/keys", list_, methods=["GET"]),
    Route("/api/keys/{key_id}", update, methods=["PATCH"]),
    Route("/api/keys/{key_id}", delete, methods=["DELETE"]),
]
