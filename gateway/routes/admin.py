"""The operator's API (`/api/admin/*`): users, credits, plans, status, stats and reload (nodes: admin_nodes).

Every handler starts with `require_admin`, which refuses callers outside ADMIN_ALLOWED_CIDRS
before it looks at the token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import accounts, admin_actions, email_flows, invites
from gateway import admin as operators
from gateway.admin import UserRow
from gateway.auth.deps import require_admin
from gateway.capabilities import confirm_claims
from gateway.context import context
from gateway.db.models import (
    Invite,
    utcnow,
)
from gateway.errors import GatewayError
from gateway.fields import FieldError, iso, parse_int, usd
from gateway.http import JSONResponse, read_json
from gateway.mail import Mailer
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
    """Credit or debit an account (`admin_adjust`) with a required `reason` (the older `note` counts as one);
    a debit below the free balance is refused."""
    actor = await require_admin(request)
    body = await read_json(request)
    param = "reason" if body.get("reason") is not None or body.get("note") is None else "note"
    user_id = request.path_params["user_id"]
    async with context(request).sessions() as session:
        await operators.adjust_credits(session, user_id=user_id, amount=body.get("amount_usd"), reason=body.get(param),
                                       actor_user_id=actor.user.id, reason_param=param)
        await session.commit()
    return await _respond_with_member(request, user_id)


async def set_plan(request: Request) -> Response:
    admin = await require_admin(request)
    body = await read_json(request)
    grant = body.get("grant_included_credits", False)
    if not isinstance(grant, bool):
        raise FieldError("grant_included_credits must be true or false.", param="grant_included_credits")
    reason = _reason(body) if grant else None  # granting credits is a money action: it needs a reason
    ctx = context(request)
    user_id = request.path_params["user_id"]
    async with ctx.sessions() as session:
        await accounts.set_plan(session, ctx.registry.current, user_id=user_id, plan=body.get("plan"),
                                grant_included_credits=grant, actor_user_id=admin.user.id, reason=reason)
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


async def delete_user(request: Request) -> Response:
    """Soft-delete a user: keys revoked at once, email freed, ledger and usage kept -> the user as it is now."""
    admin = await require_admin(request)
    user_id = request.path_params["user_id"]
    ctx = context(request)
    async with ctx.sessions() as session:
        await admin_actions.delete_user(session, user_id=user_id, actor_user_id=admin.user.id)
        await session.commit()
    ctx.key_resolver.forget_user(user_id)
    return await _respond_with_member(request, user_id)


async def disable_user(request: Request) -> Response:
    return await _set_status(request, "disabled")


async def enable_user(request: Request) -> Response:
    return await _set_status(request, "active")


async def create_user(request: Request) -> Response:
    """Create a user (whatever SIGNUP_MODE says): `{"email", "password", "name"?, "role"?}` -> 201 and the user."""
    await require_admin(request)
    body = await read_json(request)
    role = body.get("role", "user")
    if role not in accounts.ROLES:
        raise FieldError(f"role must be one of: {', '.join(accounts.ROLES)}.", param="role")
    ctx = context(request)
    async with ctx.sessions() as session:
        member = await accounts.create_user(session, ctx.registry.current, ctx.passwords, email=body.get("email"),
                                            password=body.get("password"), name=body.get("name"), role=role)
        member.user.email_verified_at = utcnow()  # the admin vouches for the address
        await session.commit()
    return JSONResponse(member_json(UserRow(member, 0, 0)), status_code=201)


def invite_json(invite: Invite) -> dict[str, Any]:
    return {"id": invite.id, "email": invite.email, "expires_at": iso(invite.expires_at),
            "used_at": iso(invite.used_at), "used_by": invite.used_by, "created_at": iso(invite.created_at)}


async def create_invite(request: Request) -> Response:
    """A single-use sign-up invite: `{"email"?, "days"?}` -> 201 with the token (shown only now)."""
    admin = await require_admin(request)
    body = await read_json(request)
    ctx = context(request)
    async with ctx.sessions() as session:
        new = await admin_actions.create_invite(session, ctx.settings, email=body.get("email"),
                                                days=body.get("days", invites.DEFAULT_DAYS),
                                                actor_user_id=admin.user.id)
        await session.commit()
    email = new.invite.email
    mailer = Mailer.from_settings(ctx.settings)
    background = None
    if email is not None and mailer is not None:
        background = BackgroundTask(email_flows.send_invite, mailer, email=email, token=new.token)
    return JSONResponse({**invite_json(new.invite), "token": new.token, "emailed": background is not None,
                         "signup_url": admin_actions.invite_link(ctx.settings, new.token)}, status_code=201,
                        background=background)


async def list_invites(request: Request) -> Response:
    """Invites, newest first (never their tokens)."""
    await require_admin(request)
    limit = parse_int(request.query_params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(request.query_params.get("offset"), param="offset", default=0, minimum=0)
    async with context(request).sessions() as session:
        total, found = await admin_actions.list_invites(session, limit=limit, offset=offset)
    return JSONResponse({"items": [invite_json(invite) for invite in found], "total": total, "limit": limit,
                         "offset": offset})


def _reason(body: dict[str, Any]) -> str:
    """The required reason of an admin money action (it goes into the ledger note)."""
    return operators.require_reason(body.get("reason"))


async def grant_trial(request: Request) -> Response:
    """Grant trial credit: `{"amount_usd", "days", "reason"}` -> the user; a `trial_grant` ledger row."""
    admin = await require_admin(request)
    body = await read_json(request)
    user_id = request.path_params["user_id"]
    async with context(request).sessions() as session:
        await admin_actions.grant_trial(session, user_id=user_id, amount_usd=body.get("amount_usd"),
                                        days=body.get("days"), reason=body.get("reason"), actor_user_id=admin.user.id)
        await session.commit()
    return await _respond_with_member(request, user_id)


async def create_redemption_codes(request: Request) -> Response:
    """A batch of single-use codes: `{"count", "amount_usd", "reason", "expires_at"?, "format"?: "csv"}` ->
    201 with the plain codes (JSON, or CSV with `format: csv`); they are never shown again."""
    admin = await require_admin(request)
    body = await read_json(request)
    fmt = body.get("format", "json")
    if fmt not in ("json", "csv"):
        raise FieldError("format must be json or csv.", param="format")
    ctx = context(request)
    async with ctx.sessions() as session:
        batch = await admin_actions.create_code_batch(session, ctx.settings, count=body.get("count"),
                                                      amount_usd=body.get("amount_usd"), reason=body.get("reason"),
                                                      expires_at=body.get("expires_at"), actor_user_id=admin.user.id)
        await session.commit()
    if fmt == "csv":
        return Response(batch.csv(), status_code=201, media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="codes-{batch.batch_id}.csv"'})
    return JSONResponse({"batch_id": batch.batch_id, "amount_usd": usd(batch.face_pico),
                         "expires_at": iso(batch.expires_at), "codes": batch.codes}, status_code=201)


async def list_redemption_codes(request: Request) -> Response:
    """Codes (never their plain text) with their state, newest first; optional `batch_id` filter."""
    await require_admin(request)
    params = request.query_params
    limit = parse_int(params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(params.get("offset"), param="offset", default=0, minimum=0)
    async with context(request).sessions() as session:
        total, codes = await admin_actions.list_codes(session, batch_id=params.get("batch_id"), limit=limit,
                                                      offset=offset)
    items = [{"id": code.id, "batch_id": code.batch_id, "amount_usd": usd(code.face_pico),
              "expires_at": iso(code.expires_at), "reason": code.reason, "redeemed_at": iso(code.redeemed_at),
              "redeemed_by": code.redeemed_by, "created_at": iso(code.created_at)} for code in codes]
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


async def webhook_events(request: Request) -> Response:
    """The payment providers' webhook deliveries as applied (audit), newest first; optional `provider`."""
    await require_admin(request)
    params = request.query_params
    limit = parse_int(params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(params.get("offset"), param="offset", default=0, minimum=0)
    async with context(request).sessions() as session:
        total, events = await admin_actions.list_webhook_events(session, provider=params.get("provider"),
                                                                limit=limit, offset=offset)
    items = [{"id": event.id, "provider": event.provider, "event_id": event.event_id, "type": event.type,
              "outcome": event.outcome, "detail": event.detail, "account_id": event.account_id,
              "received_at": iso(event.created_at)} for event in events]
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


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
    Route("/api/admin/users", create_user, methods=["POST"]),
    Route("/api/admin/invites", list_invites, methods=["GET"]),
    Route("/api/admin/invites", create_invite, methods=["POST"]),
    Route("/api/admin/users/{user_id}", get_user, methods=["GET"]),
    Route("/api/admin/users/{user_id}/credits", adjust_credits, methods=["POST"]),
    Route("/api/admin/users/{user_id}/plan", set_plan, methods=["POST"]),
    Route("/api/admin/users/{user_id}/trial", grant_trial, methods=["POST"]),
    Route("/api/admin/users/{user_id}/disable", disable_user, methods=["POST"]),
    Route("/api/admin/users/{user_id}", delete_user, methods=["DELETE"]),
    Route("/api/admin/users/{user_id}/enable", enable_user, methods=["POST"]),
    Route("/api/admin/redemption-codes", list_redemption_codes, methods=["GET"]),
    Route("/api/admin/redemption-codes", create_redemption_codes, methods=["POST"]),
    Route("/api/admin/webhook-events", webhook_events, methods=["GET"]),
    Route("/api/admin/stats", stats, methods=["GET"]),
    Route("/api/admin/reload", reload, methods=["POST"]),
]
