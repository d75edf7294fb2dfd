"""`/billing`: balance, plan and its included credits, the mock top-ups, and the ledger (paginated)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.billing import ledger
from gateway.billing.money import format_usd
from gateway.billing.topup import mock_offer, top_up
from gateway.context import context
from gateway.fields import parse_int
from gateway.web.dashboard import plan_of
from gateway.web.forms import read_form
from gateway.web.render import dollars, page, redirect, render
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
    offers = ctx.registry.current.billing
    added = request.query_params.get("added")
    credited = {_short(offer.credit_pico): offer for offer in (*offers.amounts, *offers.packs)}
    notice = f"Added ${format_usd(credited[added].credit_pico)} to your balance." if added in credited else None
    return render(request, "billing.html", web, account=web.member.account,
                  plan=plan_of(ctx.registry.current, web.member.account.plan_name),
                  mock_enabled="mock" in ctx.settings.payment_providers, amounts=offers.amounts, packs=offers.packs,
                  entries=entries, total=total, page=number, pages=max(1, -(-total // PAGE_SIZE)), notice=notice)


@page
async def topup(request: Request) -> Response:
    """A mock top-up of one of the offered amounts or packs (the same rule as POST /api/billing/topup)."""
    web = await require_session(request)
    form = await read_form(request)
    check_form(request, web, form)
    ctx = context(request)
    choice = {name: form.get(name) for name in ("amount_usd", "pack") if form.get(name)}
    offer = mock_offer(ctx.settings, ctx.registry.current.billing, choice)
    async with ctx.sessions() as session:
        await top_up(session, member=web.member, offer=offer)
        await session.commit()
    ctx.metrics.credit_transaction("topup")
    return redirect(request, f"/billing?added={_short(offer.credit_pico)}")


def _short(pico: int) -> str:
    """25 for whole dollars, 20.50 otherwise (the `added` notice's query value)."""
    return dollars(pico).removeprefix("$")


routes = [
    Route("/billing", billing, methods=["GET"]),
    Route("/billing/topup", topup, methods=["POST"]),
]
