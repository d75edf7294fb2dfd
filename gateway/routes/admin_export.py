"""`GET /api/admin/usage/export`: the usage export of `privaterouter usage export`, streamed over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import usage_export
from gateway.auth.deps import require_admin
from gateway.context import context
from gateway.fields import FieldError, parse_time

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def export_time(value: str | None, *, param: str) -> datetime:
    """A required ISO 8601 time or date (UTC when no offset), or a 400 naming `param`."""
    if not value:
        raise FieldError(f"{param} is required, e.g. 2026-11-01 or 2026-11-01T00:00:00Z.", param=param)
    try:
        return parse_time(value, param=param)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past the last representable UTC time
        raise FieldError(f"{param} is out of range.", param=param) from None


async def export(request: Request) -> Response:
    """Query `from`, `to` (exclusive), optional `user` (email) and `format` (csv or jsonl, default csv)."""
    await require_admin(request)
    params = request.query_params
    since = export_time(params.get("from"), param="from")
    until = export_time(params.get("to"), param="to")
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
