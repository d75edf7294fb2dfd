"""`/dashboard` (balance, plan, this month, 30-day spend chart, quick start) and `/models` (the catalogue)."""

from __future__ import annotations

from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import usage_report
from gateway.billing import trials
from gateway.billing.money import format_usd, to_pico
from gateway.context import context
from gateway.db.models import utcnow
from gateway.registry import Plan, Registry
from gateway.web.charts import last_days, stacked_bars
from gateway.web.email_pages import verification_notice
from gateway.web.render import page, render
from gateway.web.session import require_session

CHART_DAYS = 30


def plan_of(registry: Registry, name: str) -> Plan:
    return registry.plans.get(name) or registry.plans["free"]


def base_url(request: Request) -> str:
    """This deployment's /v1 base URL as the browser reached it."""
    return str(request.base_url).rstrip("/") + "/v1"


@page
async def dashboard(request: Request) -> Response:
    web = await require_session(request)
    ctx = context(request)
    registry = ctx.registry.current
    account = await trials.fresh_account(ctx.sessions, web.member.account)
    now = utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = last_days(now.date(), CHART_DAYS)
    async with ctx.sessions() as session:
        month = await usage_report.totals(session, account.id, usage_report.UsageFilter(since=month_start))
        daily = await usage_report.daily_by_model(session, account.id, now - timedelta(days=CHART_DAYS))
    chart = stacked_bars(days, {(day, model): cost for day, model, cost in daily},
                         label=lambda pico: "$" + format_usd(pico))
    plan = plan_of(registry, account.plan_name)
    example = next((model.name for model in registry.models.values() if model.kind == "chat"
                    and plan.allows(model.name)), "privaterouter/fast")
    return render(request, "dashboard.html", web, account=account, plan=plan, chart=chart, example_model=example,
                  month_requests=sum(row.requests for row in month),
                  month_cost=sum(row.cost_pico for row in month), base_url=base_url(request),
                  verified=request.query_params.get("verified") == "1", **verification_notice(request, web))


@page
async def models(request: Request) -> Response:
    web = await require_session(request)
    registry = context(request).registry.current
    plan = plan_of(registry, web.member.account.plan_name)
    rows = [(model, plan.allows(model.name), to_pico(model.input_price), to_pico(model.output_price))
            for model in registry.models.values()]
    return render(request, "models.html", web, rows=rows, plan=plan)


routes = [
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/models", models, methods=["GET"]),
]
