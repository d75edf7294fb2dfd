"""Reading an account's usage events: filters, pages and per-model/per-day totals.

Shared by `/api/usage*` and the `/usage` and `/dashboard` pages. Every query starts with
`account_id = ? AND created_at` ranges, so it runs on the (account_id, created_at) and
(account_id, model_public_name, created_at) indexes however many events an account has. Pages can
be addressed by offset (the API's contract) or by a keyset cursor `(created_at, id)` of the last
row shown (the web page), which stays one index range scan on page 1 and on page 5,000 alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from starlette.datastructures import QueryParams

from gateway.db.models import UsageEvent
from gateway.fields import FieldError, as_utc, parse_time

STATUSES = ("success", "error", "cancelled", "interrupted")
GROUPS = ("model", "day")


@dataclass(frozen=True)
class UsageFilter:
    """Which events: a public model name, an API key id, a status, and a [since, until) time range (UTC)."""

    model: str | None = None
    key_id: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Cursor:
    """The position after the last event shown: its `created_at` and `id` (newest-first order)."""

    created_at: datetime
    id: int

    def encode(self) -> str:
        return f"{as_utc(self.created_at).isoformat()}~{self.id}"

    @classmethod
    def decode(cls, text: str, *, param: str = "after") -> Cursor:
        """FieldError(param) for anything but what `encode` produced."""
        moment, _, number = text.partition("~")
        if not number.isdigit() or len(number) > 18:
            raise FieldError(f"{param} is not a valid page cursor.", param=param)
        return cls(parse_time(moment, param=param), int(number))


@dataclass(frozen=True)
class Totals:
    """Requests, tokens and cost (pico-USD) of one group (a model or a UTC day)."""

    key: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_pico: int


def time_range(params: QueryParams) -> tuple[datetime | None, datetime | None]:
    """`since` (inclusive) and `until` (exclusive) from the query string; FieldError naming the bad one."""
    since = parse_time(params["since"], param="since") if params.get("since") else None
    until = parse_time(params["until"], param="until") if params.get("until") else None
    if since is not None and until is not None and until <= since:
        raise FieldError("until must be later than since.", param="until")
    return since, until


def parse_filter(params: QueryParams) -> UsageFilter:
    """The filter of a query string (`model`, `key_id`, `status`, `since`, `until`); FieldError on a bad value."""
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise FieldError(f"status must be one of {', '.join(STATUSES)}.", param="status")
    since, until = time_range(params)
    return UsageFilter(model=params.get("model") or None, key_id=params.get("key_id") or None, status=status,
                       since=since, until=until)


def in_range(column: Any, since: datetime | None, until: datetime | None) -> list[Any]:
    conditions = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def conditions(account_id: str, usage_filter: UsageFilter) -> list[Any]:
    found = [col(UsageEvent.account_id) == account_id,
             *in_range(col(UsageEvent.created_at), usage_filter.since, usage_filter.until)]
    if usage_filter.model:
        found.append(col(UsageEvent.model_public_name) == usage_filter.model)
    if usage_filter.status:
        found.append(col(UsageEvent.status) == usage_filter.status)
    if usage_filter.key_id:
        found.append(col(UsageEvent.api_key_id) == usage_filter.key_id)
    return found


def day_of(session: AsyncSession, column: Any) -> Any:
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD', on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.strftime("%Y-%m-%d", column)


async def count_events(session: AsyncSession, account_id: str, usage_filter: UsageFilter) -> int:
    total = await session.scalar(sa.select(sa.func.count()).select_from(UsageEvent)
                                 .where(*conditions(account_id, usage_filter)))
    return int(total or 0)


async def page_events(session: AsyncSession, account_id: str, usage_filter: UsageFilter, *, limit: int,
                      offset: int = 0, after: Cursor | None = None) -> list[UsageEvent]:
    """Up to `limit` events, newest first, from `offset` or after the `after` cursor."""
    where = conditions(account_id, usage_filter)
    created, ident = col(UsageEvent.created_at), col(UsageEvent.id)
    if after is not None:
        # A row-value comparison: PostgreSQL turns it into one range on the (account_id, created_at) index.
        where.append(sa.tuple_(created, ident) < sa.tuple_(sa.literal(after.created_at, sa.DateTime(timezone=True)),
                                                           sa.literal(after.id, sa.BigInteger())))
    rows = await session.execute(sa.select(UsageEvent).where(*where).order_by(created.desc(), ident.desc())
                                 .limit(limit).offset(offset))
    return list(rows.scalars())


async def iterate_events(session: AsyncSession, account_id: str, usage_filter: UsageFilter, *,
                         batch: int = 1000) -> AsyncIterator[UsageEvent]:
    """Every matching event, newest first, read in keyset batches (memory stays flat for a CSV export)."""
    after: Cursor | None = None
    while True:
        events = await page_events(session, account_id, usage_filter, limit=batch, after=after)
        for event in events:
            yield event
        if len(events) < batch:
            return
        last = events[-1]
        assert last.id is not None
        after = Cursor(last.created_at, last.id)


async def totals(session: AsyncSession, account_id: str, usage_filter: UsageFilter, *,
                 group_by: str = "model") -> list[Totals]:
    """Requests, tokens and cost per model (or per UTC day) of the filtered events, ordered by the group."""
    if group_by not in GROUPS:
        raise FieldError("group_by must be 'model' or 'day'.", param="group_by")
    key = col(UsageEvent.model_public_name) if group_by == "model" else day_of(session, col(UsageEvent.created_at))
    rows = (await session.execute(
        sa.select(key.label("key"), sa.func.count().label("requests"),
                  sa.func.coalesce(sa.func.sum(UsageEvent.input_tokens), 0).label("input_tokens"),
                  sa.func.coalesce(sa.func.sum(UsageEvent.output_tokens), 0).label("output_tokens"),
                  sa.func.coalesce(sa.func.sum(UsageEvent.cost_pico), 0).label("cost_pico"))
        .where(*conditions(account_id, usage_filter)).group_by(key).order_by(key)
    )).all()
    return [Totals(str(row.key), int(row.requests), int(row.input_tokens), int(row.output_tokens),
                   int(row.cost_pico)) for row in rows]


async def daily_by_model(session: AsyncSession, account_id: str, since: datetime) -> list[tuple[str, str, int]]:
    """(UTC day, model, cost pico-USD) of every day and model with usage since `since`: the dashboard chart."""
    day = day_of(session, col(UsageEvent.created_at))
    rows = (await session.execute(
        sa.select(day.label("day"), col(UsageEvent.model_public_name), sa.func.sum(UsageEvent.cost_pico))
        .where(col(UsageEvent.account_id) == account_id, col(UsageEvent.created_at) >= since)
        .group_by(day, col(UsageEvent.model_public_name)).order_by(day)
    )).all()
    return [(str(row[0]), str(row[1]), int(row[2] or 0)) for row in rows]
