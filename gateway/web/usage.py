"""`/usage`: the filtered, keyset-paginated request table with per-model totals, and its CSV export.

Filters are the API's (model, key, status, [since, until)) with dates instead of times: `until`
is the last day included. Pages follow a cursor (the last row's time and id), so page N costs what
page 1 costs however long the history is (see bench/usage_page.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import keys, usage_report
from gateway.context import context
from gateway.db.models import UsageEvent, utcnow
from gateway.errors import GatewayError
from gateway.fields import as_utc, usd
from gateway.usage_report import Cursor, UsageFilter
from gateway.web.forms import Form
from gateway.web.render import page, render
from gateway.web.security import add_security_headers
from gateway.web.session import require_session

PAGE_SIZE = 50
FILTERS = ("model", "key_id", "status", "since", "until")
CSV_COLUMNS = ("created_at", "request_id", "model", "key", "endpoint", "input_tokens", "output_tokens",
               "tokens_estimated", "cost_usd", "latency_ms", "status", "error_code")


def _day(value: str, name: str, form: Form) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        form.errors[name] = "Use a date such as 2026-05-15."
        return None


def read_filter(request: Request) -> tuple[UsageFilter, Form]:
    """The page's filter from its query string, and the form (values and errors) to show it in.

    Without any `since` parameter the page shows the current UTC month (as billing consoles do), so
    its totals cover a bounded range however long the history; `since=` (empty) means all time.
    """
    params = request.query_params
    form = Form({name: [params.get(name, "")] for name in FILTERS})
    if "since" not in params:
        form.values["since"] = [utcnow().date().replace(day=1).isoformat()]
    status = form.get("status") or None
    if status is not None and status not in usage_report.STATUSES:
        form.errors["status"] = f"Choose one of {', '.join(usage_report.STATUSES)}."
        status = None
    since = _day(form.get("since"), "since", form)
    last = _day(form.get("until"), "until", form)
    try:
        until = last + timedelta(days=1) if last is not None else None
    except OverflowError:  # the last day datetime can hold (9999-12-31): "until the end of time"
        until = None
    if since is not None and until is not None and until <= since:
        form.errors["until"] = "The last day must not be before the first."
        until = None
    return UsageFilter(model=form.get("model") or None, key_id=form.get("key_id") or None, status=status,
                       since=since, until=until), form


@page
async def usage(request: Request) -> Response:
    web = await require_session(request)
    usage_filter, form = read_filter(request)
    after_text = request.query_params.get("after")
    after = Cursor.decode(after_text) if after_text else None
    account_id = web.member.account.id
    async with context(request).sessions() as session:
        events = await usage_report.page_events(session, account_id, usage_filter, limit=PAGE_SIZE + 1, after=after)
        per_model = await usage_report.totals(session, account_id, usage_filter)
        total = sum(row.requests for row in per_model)  # the totals already count the rows: no second scan
        names = await keys.key_names(session, user_id=web.member.user.id)
        live = await keys.list_keys(session, user_id=web.member.user.id)
    more = len(events) > PAGE_SIZE
    events = events[:PAGE_SIZE]
    query = {name: form.get(name) for name in FILTERS if form.get(name) and name not in form.errors}
    query.setdefault("since", "")  # links keep "all time" when that was chosen
    next_url = None
    if more:
        last = events[-1]
        assert last.id is not None
        next_url = "/usage?" + urlencode({**query, "after": Cursor(last.created_at, last.id).encode()})
    models = sorted(set(context(request).registry.current.models) | {row.key for row in per_model})
    return render(request, "usage.html", web, form=form, events=events, total=total, per_model=per_model,
                  key_names=names, keys=live, models=models, statuses=usage_report.STATUSES, next_url=next_url,
                  first_url="/usage?" + urlencode(query) if after else None,
                  csv_url="/usage.csv?" + urlencode(query), status=400 if form.errors else 200)


def _cell(value: object) -> str:
    """A CSV cell; text that a spreadsheet would run as a formula gets a leading apostrophe (OWASP)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_row(event: UsageEvent, key_names: dict[str, str]) -> list[str]:
    key = key_names.get(event.api_key_id, event.api_key_id or "") if event.api_key_id else "playground"
    return [_cell(value) for value in (
        as_utc(event.created_at).isoformat(), event.request_id, event.model_public_name, key, event.endpoint,
        event.input_tokens, event.output_tokens, str(event.tokens_estimated).lower(),
        usd(event.cost_pico), event.latency_ms, event.status, event.error_code)]


@page
async def usage_csv(request: Request) -> Response:
    """Every row of the filtered table as CSV, streamed in keyset batches (no page limit)."""
    web = await require_session(request)
    usage_filter, form = read_filter(request)
    if form.errors:
        raise GatewayError(400, "invalid_body", next(iter(form.errors.values())))
    sessions = context(request).sessions
    account_id, user_id = web.member.account.id, web.member.user.id

    async def rows() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        async with sessions() as session:
            names = await keys.key_names(session, user_id=user_id)
            count = 0
            async for event in usage_report.iterate_events(session, account_id, usage_filter):
                writer.writerow(csv_row(event, names))
                count += 1
                if count % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    response = StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="usage.csv"'})
    add_security_headers(response)
    return response


routes = [
    Route("/usage", usage, methods=["GET"]),
    Route("/usage.csv", usage_csv, methods=["GET"]),
]
