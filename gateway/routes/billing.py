"""Balance, mock top-ups and the ledger (`/api/billing/*`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.deps import current_user
from gateway.billing import ledger
from gateway.billing.topup import parse_topup_amount, top_up
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
    """Mock top-up of exactly 10, 25, 50, 100 or 500 USD (no card is charged)."""
    member = await current_user(request)
    body = await read_json(request)
    amount = parse_topup_amount(body.get("amount_usd"))
    ctx = context(request)
    async with ctx.sessions() as session:
        account = await top_up(session, member=member, amount_pico=amount)
        await session.commit()
    return JSONResponse(balance_json(account))


async def transactions(request: Request) -> Response:
    """The account's ledger, newest first."""
    member = await current_user(request)
    limit = parse_int(request.query_params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(request.query_params.get("offset"), param="offset", default=0, minimum=0)
    async with context(request).sessions() as session:
        total, entries = await ledger.page(session, account_id=member.account.id, limit=limit, offset=offset)
    items = [transaction_json(entry) for entry in entries]
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


routes = [
    Route("/api/billing/balance", balance, methods=["GET"]),
    Route("/api/billing/topup", topup, methods=["POST"]),
    Route("/api/billing/transactions", transactions, methods=["GET"]),
]
