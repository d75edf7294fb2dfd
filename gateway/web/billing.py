"""`/billing`: balance, plan and its included credits, the mock top-ups, and the ledger (paginated)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.billing import ledger
from gateway.billing.money import to_pico
from gateway.billing.topup import TOPUP_AMOUNTS_USD, parse_topup_amount, top_up
from gateway.context import context
from gateway.fields import parse_int
from gateway.web.dashboard import plan_of
from gateway.web.forms import read_form
from gateway.web.render import page, redirect, render
from gateway.web.session import check_form, require_session

PAGE_SIZE = 20


@page
async def billing(request: Request) -> Response:
    web = await require_session(request)
    ctx = context(request)
    number = parse_int(request.query_params.get("page"), param="page", default=1, minimum=1, maximum=10**6)
    async with ctx.sessions() as session:
        total, entries = await ledger.page(session, account_id=web.member.account.id, limit=PAGE_SIZE,
                                           offset=(number - 1) * PAGE_SIZE)
    added = request.query_params.get("added")
    notice = f"Added ${added}.00 to your balance." if added in {str(amount) for amount in TOPUP_AMOUNTS_USD} else None
    return render(request, "billing.html", web, account=web.member.account,
                  plan=plan_of(ctx.registry.current, web.member.account.plan_name), amounts=TOPUP_AMOUNTS_USD,
                  entries=entries, total=total, page=number, pages=max(1, -(-total // PAGE_SIZE)), notice=notice)


@page
async def topup(request: Request) -> Response:
    """A mock top-up of one of the offered amounts (the same rule as POST /api/billing/topup)."""
    web = await require_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    amount = parse_topup_amount(form.get("amount_usd") or None)
    async with context(request).sessions() as session:
        await top_up(session, member=web.member, amount_pico=amount)
        await session.commit()
    return redirect(request, f"/billing?added={amount // to_pico(1)}")


routes = [
    Route("/billing", billing, methods=["GET"]),
    Route("/billing/topup", topup, methods=["POST"]),
]
