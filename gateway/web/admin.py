"""`/admin`: the operator's console (role admin, within ADMIN_ALLOWED_CIDRS; anyone else gets a 404).

Overview with daily stats and a chart, users (search, then one user's page: credits with a reason,
plan, trial credit, enable/disable, soft delete, their keys, usage and ledger), nodes, and the registry
with its reload. Invites, redemption codes and webhook deliveries are in `gateway.web.admin_tools`.
Every change goes through the same domain functions as `/api/admin/*`.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import accounts, admin_actions, keys, usage_report
from gateway import admin as operators
from gateway.billing import ledger
from gateway.billing.money import format_usd
from gateway.context import context
from gateway.db.models import utcnow
from gateway.errors import GatewayError
from gateway.fields import parse_int
from gateway.nodes import node_statuses
from gateway.registry import RegistryError
from gateway.web.charts import last_days, stacked_bars
from gateway.web.forms import Form, form_int, read_form
from gateway.web.render import page, redirect, render
from gateway.web.session import WebSession, check_form, require_admin_session

PAGE_SIZE = 25
STATS_DAYS = 30
NOTICES = {"credits": "Credits adjusted.", "plan": "Plan changed.", "active": "User enabled.",
           "disabled": "User disabled.", "trial": "Trial credit granted.", "deleted": "User deleted."}
TRIAL_FIELDS = ("amount_usd", "days", "reason")


@page
async def overview(request: Request) -> Response:
    web = await require_admin_session(request)
    until = utcnow()
    since = until - timedelta(days=STATS_DAYS)
    async with context(request).sessions() as session:
        stats = await operators.stats(session, since=since, until=until)
        days = await operators.daily(session, since=since, until=until)
    chart = stacked_bars(last_days(until.date(), STATS_DAYS), {(day.day, "revenue"): day.revenue_pico for day in days},
                         label=lambda pico: "$" + format_usd(pico))
    return render(request, "admin/overview.html", web, stats=stats, days=list(reversed(days)), chart=chart)


@page
async def users(request: Request) -> Response:
    web = await require_admin_session(request)
    query = request.query_params.get("q", "").strip()
    number = parse_int(request.query_params.get("page"), param="page", default=1, minimum=1, maximum=10**6)
    async with context(request).sessions() as session:
        total, rows = await operators.search_users(session, email=query or None, limit=PAGE_SIZE,
                                                   offset=(number - 1) * PAGE_SIZE)
    return render(request, "admin/users.html", web, rows=rows, total=total, q=query, page=number,
                  pages=max(1, -(-total // PAGE_SIZE)))


async def _user_page(request: Request, web: WebSession, *, form: Form | None = None, trial_form: Form | None = None,
                     status: int = 200) -> Response:
    user_id = request.path_params["user_id"]
    ctx = context(request)
    async with ctx.sessions() as session:
        row = await operators.user_row(session, user_id)
        user_keys = await keys.list_keys(session, user_id=user_id)
        events = await usage_report.page_events(session, row.member.account.id, usage_report.UsageFilter(), limit=20)
        _, entries = await ledger.page(session, account_id=row.member.account.id, limit=10, offset=0)
    notice = NOTICES.get(request.query_params.get("done", ""))
    return render(request, "admin/user.html", web, row=row, keys=user_keys, events=events, entries=entries,
                  plans=list(ctx.registry.current.plans), form=form or Form(), trial_form=trial_form or Form(),
                  notice=notice, is_self=user_id == web.member.user.id, status=status)


@page
async def user(request: Request) -> Response:
    web = await require_admin_session(request)
    return await _user_page(request, web)


@page
async def credits(request: Request) -> Response:
    web = await require_admin_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    user_id = request.path_params["user_id"]
    try:
        async with context(request).sessions() as session:
            await operators.adjust_credits(session, user_id=user_id, amount=form.get("amount_usd").strip(),
                                           reason=form.get("reason"), actor_user_id=web.member.user.id)
            await session.commit()
    except GatewayError as error:
        if error.status == 404:
            raise
        form.fail(error, ("amount_usd", "reason"))
        return await _user_page(request, web, form=form, status=400)
    return redirect(request, f"/admin/users/{user_id}?done=credits")


@page
async def plan(request: Request) -> Response:
    web = await require_admin_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    user_id = request.path_params["user_id"]
    grant = form.get("grant_included_credits") == "on"
    reason = operators.require_reason(form.get("grant_reason")) if grant else None
    async with ctx.sessions() as session:
        await accounts.set_plan(session, ctx.registry.current, user_id=user_id, plan=form.get("plan"),
                                grant_included_credits=grant, actor_user_id=web.member.user.id, reason=reason)
        await session.commit()
    ctx.key_resolver.forget_user(user_id)  # cached principals carry the plan name
    return redirect(request, f"/admin/users/{user_id}?done=plan")


@page
async def user_status(request: Request) -> Response:
    web = await require_admin_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    user_id = request.path_params["user_id"]
    status = form.get("status")
    async with ctx.sessions() as session:
        await operators.set_user_status(session, user_id=user_id, status=status, actor_user_id=web.member.user.id)
        await session.commit()
    ctx.key_resolver.forget_user(user_id)
    return redirect(request, f"/admin/users/{user_id}?done={status}")


@page
async def trial(request: Request) -> Response:
    """Grant trial credit (as POST /api/admin/users/{id}/trial); field errors shown on the user's page."""
    web = await require_admin_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    user_id = request.path_params["user_id"]
    try:
        async with context(request).sessions() as session:
            await admin_actions.grant_trial(session, user_id=user_id, amount_usd=form.get("amount_usd").strip(),
                                            days=form_int(form.get("days")), reason=form.get("reason"),
                                            actor_user_id=web.member.user.id)
            await session.commit()
    except GatewayError as error:
        if error.status == 404:
            raise
        form.fail(error, TRIAL_FIELDS)
        return await _user_page(request, web, trial_form=form, status=400)
    return redirect(request, f"/admin/users/{user_id}?done=trial")


@page
async def delete_user(request: Request) -> Response:
    """GET: "delete this user?" with what it means. POST: soft-delete (as DELETE /api/admin/users/{id})."""
    web = await require_admin_session(request)
    ctx = context(request)
    user_id = request.path_params["user_id"]
    if request.method == "GET":
        async with ctx.sessions() as session:
            row = await operators.user_row(session, user_id)
        return render(request, "admin/user_delete.html", web, row=row)
    check_form(request, web, await read_form(request))
    async with ctx.sessions() as session:
        await admin_actions.delete_user(session, user_id=user_id, actor_user_id=web.member.user.id)
        await session.commit()
    ctx.key_resolver.forget_user(user_id)
    return redirect(request, f"/admin/users/{user_id}?done=deleted")


@page
async def nodes(request: Request) -> Response:
    """Every node as GET /api/admin/nodes shows it: up, latency, Ollama version, resident models (/api/ps),
    in flight vs max_concurrency, and whether the pool routes to it."""
    web = await require_admin_session(request)
    ctx = context(request)
    statuses = await node_statuses(ctx.registry.current, ctx.http, ctx.pool)
    return render(request, "admin/nodes.html", web, nodes=statuses)


@page
async def registry(request: Request) -> Response:
    """GET: the registry in force. POST: reload models.yaml and show the diff, or the file:line error."""
    web = await require_admin_session(request)
    holder = context(request).registry
    diff = error = None
    status = 200
    if request.method == "POST":
        check_form(request, web, await read_form(request))
        try:
            diff = holder.reload()
        except RegistryError as exc:
            error, status = str(exc), 400
    return render(request, "admin/registry.html", web, registry=holder.current, file=str(holder.path), diff=diff,
                  error=error, status=status)


routes = [
    Route("/admin", overview, methods=["GET"]),
    Route("/admin/users", users, methods=["GET"]),
    Route("/admin/users/{user_id}", user, methods=["GET"]),
    Route("/admin/users/{user_id}/credits", credits, methods=["POST"]),
    Route("/admin/users/{user_id}/plan", plan, methods=["POST"]),
    Route("/admin/users/{user_id}/status", user_status, methods=["POST"]),
    Route("/admin/users/{user_id}/trial", trial, methods=["POST"]),
    Route("/admin/users/{user_id}/delete", delete_user, methods=["GET", "POST"]),
    Route("/admin/nodes", nodes, methods=["GET"]),
    Route("/admin/registry", registry, methods=["GET", "POST"]),
]
