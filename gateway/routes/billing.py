"""Balance, mock top-ups and the ledger (`/api/billing/*`)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import accounts
from gateway.auth.deps import current_user
from gateway.billing import policy
from gateway.context import context
from gateway.db.models import Account, CreditTransaction
from gateway.fields import iso, parse_int, usd
from gateway.http import JSONResponse, read_json

MAX_PAGE = 100


def balance_json(account: Account) -> dict[str, Any]:
    return {
        "balance_usd": usd(account.balance_pico),
        "held_usd": usd(account.held_pico),
        "available_usd": usd(max(0, account.balance_pico - account.held_pico)),
        "plan_name": account.plan_name,
        "monthly_quota_tokens": None,
    }


def transaction_json(entry: CreditTransaction) -> dict[str, Any]:
    return {"id": entry.id, "kind": entry.kind, "amount_usd": usd(entry.amount_pico),
            "balance_after_usd": usd(entry.balance_after_pico), "note": entry.note, "request_id": entry.request_id,
            "created_at": iso(entry.created_at)}


async def balance(request: Request) -> Response:
    member = await current_user(request)
    return JSONResponse(balance_json(member.account))


async def topup(request: Request) -> Response:
    """Mock top-up of an allowed amount or pack (no card is charged); 403 `payments_disabled` unless
    PAYMENT_PROVIDERS includes mock."""
    member = await current_user(request)
    ctx = context(request)
    policy.require_provider(ctx.settings, "mock")
    offer = policy.choose_offer(ctx.registry.current.billing, await read_json(request))
    async with ctx.sessions() as session:
        account = await accounts.post_credits(session, account_id=member.account.id, kind="topup",
                                              amount_pico=offer.credit_pico,
                                              note=f"top-up {offer.label} (mock)", actor_user_id=member.user.id)
        await session.commit()
    return JSONResponse(balance_json(account))


async def options(request: Request) -> Response:
    """The enabled payment providers, top-up amounts and packs (for the billing page); public."""
    ctx = context(request)
    return JSONResponse(policy.options(ctx.settings, ctx.registry.current.billing))


async def transactions(request: Request) -> Response:
    """The account's ledger, newest first."""
    member = await current_user(request)
    limit = parse_int(request.query_params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(request.query_params.get("offset"), param="offset", default=0, minimum=0)
    mine = col(CreditTransaction.account_id) == member.account.id
    ctx = context(request)
    async with ctx.sessions() as session:
        total = await session.scalar(sa.select(sa.func.count()).select_from(CreditTransaction).where(mine))
        rows = await session.execute(
            sa.select(CreditTransaction).where(mine)
            .order_by(col(CreditTransaction.id).desc())
            .limit(limit).offset(offset)
        )
        items = [transaction_json(entry) for entry in rows.scalars()]
    return JSONResponse({"items": items, "total": total or 0, "limit": limit, "offset": offset})


routes = [
    Route("/api/billing/balance", balance, methods=["GET"]),
    Route("/api/billing/topup", topup, methods=["POST"]),
    Route("/api/billing/options", options, methods=["GET"]),
    Route("/api/billing/transactions", transactions, methods=["GET"]),
]
