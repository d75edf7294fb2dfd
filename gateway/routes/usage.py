"""The caller's usage events and their totals (`/api/usage`, `/api/usage/summary`).

Every query starts with `account_id = ? AND created_at` ranges, so it runs on the
(account_id, created_at) and (account_id, model_public_name, created_at) indexes however many
events an account has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.deps import current_user
from gateway.context import context
from gateway.db.models import UsageEvent
from gateway.fields import FieldError, iso, parse_int, parse_time, usd
from gateway.http import JSONResponse

STATUSES = ("success", "error", "cancelled", "interrupted")
GROUPS = ("model", "day")
MAX_PAGE = 100


def event_json(event: UsageEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "request_id": event.request_id,
        "model_public_name": event.model_public_name,
        "endpoint": event.endpoint,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "tokens_estimated": event.tokens_estimated,
        "cost_usd": usd(event.cost_pico),
        "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms,
        "status": event.status,
        "error_code": event.error_code,
        "key_id": event.api_key_id,
        "created_at": iso(event.created_at),
    }


def time_range(params: QueryParams) -> tuple[datetime | None, datetime | None]:
    """`since` (inclusive) and `until` (exclusive) from the query string."""
    since = parse_time(params["since"], param="since") if params.get("since") else None
    until = parse_time(params["until"], param="until") if params.get("until") else None
    if since is not None and until is not None and until <= since:
        raise FieldError("until must be later than since.", param="until")
    return since, until


def in_range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def day_of(session: AsyncSession, column: Any) -> Any:
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD', on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)


async def list_events(request: Request) -> Response:
    member = await current_user(request)
    params = request.query_params
    limit = parse_int(params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(params.get("offset"), param="offset", default=0, minimum=0)
    since, until = time_range(params)
    conditions = [col(UsageEvent.account_id) == member.account.id, *in_range(col(UsageEvent.created_at), since, until)]
    if params.get("model"):
        conditions.append(col(UsageEvent.model_public_name) == params["model"])
    if params.get("status"):
        if params["status"] not in STATUSES:
            raise FieldError(f"status must be one of {', '.join(STATUSES)}.", param="status")
        conditions.append(col(UsageEvent.status) == params["status"])
    if params.get("key_id"):
        conditions.append(col(UsageEvent.api_key_id) == params["key_id"])
    async with context(request).sessions() as session:
        total = await session.scalar(sa.select(sa.func.count()).select_from(UsageEvent).where(*conditions))
        rows = await session.execute(
            sa.select(UsageEvent).where(*conditions)
            .order_by(col(UsageEvent.created_at).desc(), col(UsageEvent.id).desc())
            .limit(limit).offset(offset)
        )
        items = [event_json(event) for event in rows.scalars()]
    return JSONResponse({"items": items, "total": total or 0, "limit": limit, "offset": offset})


async def summary(request: Request) -> Response:
    """Requests, tokens and cost per model (or per UTC day) over an optional period, with totals."""
    member = await current_user(request)
    params = request.query_params
    group_by = params.get("group_by") or "model"
    if group_by not in GROUPS:
        raise FieldError("group_by must be 'model' or 'day'.", param="group_by")
    since, until = time_range(params)
    conditions = [col(UsageEvent.account_id) == member.account.id, *in_range(col(UsageEvent.created_at), since, until)]
    async with context(request).sessions() as session:
        key = col(UsageEvent.model_public_name) if group_by == "model" else day_of(session, col(UsageEvent.created_at))
        rows = (await session.execute(
            sa.select(key.label("key"), sa.func.count().label("requests"),
                      sa.func.coalesce(sa.func.sum(UsageEvent.input_tokens), 0).label("input_tokens"),
                      sa.func.coalesce(sa.func.sum(UsageEvent.output_tokens), 0).label("output_tokens"),
                      sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0).label("cost_pico"))
            .where(*conditions).group_by(key).order_by(key)
        )).all()
    items = [{group_by: row.key, "requests": int(row.requests), "input_tokens": int(row.input_tokens),
              "output_tokens": int(row.output_tokens), "cost_usd": usd(int(row.cost_pico))} for row in rows]
    totals = {"requests": sum(item["requests"] for item in items),
              "input_tokens": sum(item["input_tokens"] for item in items),
              "output_tokens": sum(item["output_tokens"] for item in items),
              "cost_usd": usd(sum(int(row.cost_pico) for row in rows))}
    return JSONResponse({"group_by": group_by, "since": iso(since), "until": iso(until), "items": items,
                         "totals": totals})


routes = [
    Route("/api/usage", list_events, methods=["GET"]),
    Route("/api/usage/summary", summary, methods=["GET"]),
]
