"""The caller's usage events and their totals (`/api/usage`, `/api/usage/summary`).

The queries live in gateway/usage_report.py (shared with the web pages).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth.deps import current_user
from gateway.context import context
from gateway.db.models import UsageEvent
from gateway.fields import iso, parse_int, usd
from gateway.http import JSONResponse
from gateway.usage_report import UsageFilter, count_events, page_events, parse_filter, time_range, totals

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


async def list_events(request: Request) -> Response:
    member = await current_user(request)
    params = request.query_params
    limit = parse_int(params.get("limit"), param="limit", default=20, minimum=1, maximum=MAX_PAGE)
    offset = parse_int(params.get("offset"), param="offset", default=0, minimum=0)
    usage_filter = parse_filter(params)
    async with context(request).sessions() as session:
        total = await count_events(session, member.account.id, usage_filter)
        items = [event_json(event) for event in
                 await page_events(session, member.account.id, usage_filter, limit=limit, offset=offset)]
    return JSONResponse({"items": items, "total": total, "limit": limit, "offset": offset})


async def summary(request: Request) -> Response:
    """Requests, tokens and cost per model (or per UTC day) over an optional period, with totals."""
    member = await current_user(request)
    params = request.query_params
    group_by = params.get("group_by") or "model"
    since, until = time_range(params)
    async with context(request).sessions() as session:
        rows = await totals(session, member.account.id, UsageFilter(since=since, until=until), group_by=group_by)
    items = [{group_by: row.key, "requests": row.requests, "input_tokens": row.input_tokens,
              "output_tokens": row.output_tokens, "cost_usd": usd(row.cost_pico)} for row in rows]
    totals_json = {"requests": sum(row.requests for row in rows),
                   "input_tokens": sum(row.input_tokens for row in rows),
                   "output_tokens": sum(row.output_tokens for row in rows),
                   "cost_usd": usd(sum(row.cost_pico for row in rows))}
    return JSONResponse({"group_by": group_by, "since": iso(since), "until": iso(until), "items": items,
                         "totals": totals_json})


routes = [
    Route("/api/usage", list_events, methods=["GET"]),
    Route("/api/usage/summary", summary, methods=["GET"]),
]
