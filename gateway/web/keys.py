"""`/keys`: list, create (the secret shown once), disable/enable, delete with a confirmation.

Every change goes through gateway/keys.py with the same field rules as `/api/keys`; the form's
fields are turned into the API's body shape first, so errors name the same fields.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import keys
from gateway.context import context
from gateway.db.models import ApiKey
from gateway.email_flows import require_verified
from gateway.errors import GatewayError
from gateway.fields import as_utc
from gateway.registry import Registry
from gateway.web.dashboard import plan_of
from gateway.web.email_pages import verification_notice
from gateway.web.forms import Form, read_form
from gateway.web.render import page, redirect, render
from gateway.web.session import WebSession, check_form, require_session

FIELDS = ("name", "monthly_limit_usd", "allowed_models", "expires_at", "status")


def create_body(form: Form) -> dict[str, Any]:
    """The `/api/keys` body of the create form: blanks mean "no limit", "all models", "never expires"."""
    body: dict[str, Any] = {"name": form.get("name").strip() or keys.DEFAULT_NAME}
    if form.get("monthly_limit_usd").strip():
        body["monthly_limit_usd"] = form.get("monthly_limit_usd").strip()
    if form.all("allowed_models"):
        body["allowed_models"] = form.all("allowed_models")
    if form.get("expires_at").strip():
        # A date input gives YYYY-MM-DD; the key expires at the start of that day, UTC.
        body["expires_at"] = form.get("expires_at").strip() + "T00:00:00Z"
    return body


def _plan_models(registry: Registry, web: WebSession) -> list[str]:
    """The models a key can be restricted to: those the account's plan allows (a key only narrows its plan)."""
    plan = plan_of(registry, web.member.account.plan_name)
    return [name for name in registry.models if plan.allows(name)]


async def _page(request: Request, web: WebSession, *, form: Form | None = None, created: str | None = None,
                created_key: ApiKey | None = None, status: int = 200) -> Response:
    ctx = context(request)
    async with ctx.sessions() as session:
        found = await keys.list_keys(session, user_id=web.member.user.id)
    month = datetime.now(UTC).strftime("%Y-%m")
    rows = []
    for key in found:
        last_used = key.last_used_at
        pending = ctx.key_resolver.pending_last_used(key.id)
        if pending is not None and (last_used is None or as_utc(last_used) < pending):
            last_used = pending
        rows.append((key, keys.month_spend_pico(key, month), last_used))
    response = render(request, "keys.html", web, **verification_notice(request, web), rows=rows,
                      form=form or Form(), created=created,
                      created_key=created_key, models=_plan_models(ctx.registry.current, web), status=status)
    return response


@page
async def list_or_create(request: Request) -> Response:
    """GET: the keys. POST: create one and show its secret on this answer only (never stored, never again)."""
    web = await require_session(request)
    if request.method == "GET":
        return await _page(request, web)
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    try:
        require_verified(ctx.settings, web.member.user)  # REQUIRE_EMAIL_VERIFICATION, as POST /api/keys
        values = keys.parse_key_fields(create_body(form), ctx.registry.current, creating=True)
        async with ctx.sessions() as session:
            raw, key = await keys.create_key(session, member=web.member, secret=ctx.settings.app_secret_key,
                                             values=values)
            await session.commit()
    except GatewayError as error:
        form.fail(error, FIELDS)
        return await _page(request, web, form=form, status=error.status)
    return await _page(request, web, created=raw, created_key=key, status=201)


@page
async def set_status(request: Request) -> Response:
    web = await require_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    values = keys.parse_key_fields({"status": form.get("status")}, ctx.registry.current, creating=False)
    async with ctx.sessions() as session:
        key = await keys.update_key(session, user_id=web.member.user.id, key_id=request.path_params["key_id"],
                                    values=values)
        await session.commit()
    ctx.key_resolver.forget_key(key.id)
    return redirect(request, "/keys")


@page
async def delete(request: Request) -> Response:
    """GET: "delete this key?" with the key's name. POST: soft-delete it (its usage history stays)."""
    web = await require_session(request)
    ctx = context(request)
    key_id = request.path_params["key_id"]
    if request.method == "GET":
        async with ctx.sessions() as session:
            key = await keys.get_key(session, user_id=web.member.user.id, key_id=key_id)
        return render(request, "key_delete.html", web, key=key)
    check_form(request, web, await read_form(request))
    async with ctx.sessions() as session:
        key = await keys.delete_key(session, user_id=web.member.user.id, key_id=key_id)
        await session.commit()
    ctx.key_resolver.forget_key(key.id)
    return redirect(request, "/keys")


routes = [
    Route("/keys", list_or_create, methods=["GET", "POST"]),
    Route("/keys/{key_id}/status", set_status, methods=["POST"]),
    Route("/keys/{key_id}/delete", delete, methods=["GET", "POST"]),
]
