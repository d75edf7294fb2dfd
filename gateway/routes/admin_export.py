"""`GET /api/admin/usage/export`: the usage export of `privaterouter usage export`, streamed over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import usage_export
from gateway.auth.deps import require_admin
from gateway.context import context
from gateway.fields import FieldError

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


async def export(request: Request) -> Response:
    """Query `from`, `to` (exclusive), optional `user` (email) and `format` (csv or jsonl, default csv)."""
    await require_admin(request)
    params = request.query_params
    since = usage_export.parse_bound(params.get("from"), param="from")
    until = usage_export.parse_bound(params.get("to"), param="to")
    if until <= since:
        raise FieldError("to must be later than from.", param="to")
    fmt = params.get("format") or "csv"
    if fmt not in usage_export.FORMATS:
        raise FieldError("format must be csv or jsonl.", param="format")
    query = usage_export.ExportQuery(since=since, until=until, email=params.get("user") or None)
    chunks = usage_export.lines(context(request).sessions, query, fmt)
    try:  # the first chunk before the status line: an unknown user is still a clean 404
        first = await anext(chunks, b"")
    except usage_export.UnknownUser as exc:
        raise FieldError(str(exc), param="user", code="user_not_found", status=404) from None

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk

    name = f"usage-{since:%Y%m%d}-{until:%Y%m%d}.{fmt}"
    return StreamingResponse(body(), media_type=MEDIA_TYPES[fmt],
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


routes = [Route("/api/admin/usage/export", export, methods=["GET"])]
