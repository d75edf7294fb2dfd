"""Usage export: every usage event of a period (optionally one user's) as CSV or JSON Lines, streamed.

Rows are read in keyset pages ordered by (created_at, id), each page in its own short transaction,
so memory stays at one page whatever the period holds and no long transaction pins the database.
One implementation for `privaterouter usage export` and `GET /api/admin/usage/export`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from gateway.db.models import UsageEvent, User
from gateway.fields import FieldError, iso, parse_time, usd

FORMATS = ("csv", "jsonl")
PAGE_SIZE = 2000  # rows per keyset page
COLUMNS = ("id", "created_at", "request_id", "user_email", "user_id", "account_id", "api_key_id", "model",
           "ollama_tag", "node", "endpoint", "input_tokens", "output_tokens", "tokens_estimated", "cost_usd",
           "latency_ms", "ttft_ms", "status", "error_code")


class UnknownUser(LookupError):
    """No user has the email the export was restricted to."""


@dataclass(frozen=True)
class ExportQuery:
    """Events with `since <= created_at < until` (aware UTC), of the user `email` when given."""

    since: datetime
    until: datetime
    email: str | None = None


def parse_bound(value: str | None, *, param: str) -> datetime:
    """A required ISO 8601 time or date (UTC when no offset), or a 400 naming `param`."""
    if not value:
        raise FieldError(f"{param} is required, e.g. 2026-11-01 or 2026-11-01T00:00:00Z.", param=param)
    try:
        return parse_time(value, param=param)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past the last representable UTC time
        raise FieldError(f"{param} is out of range.", param=param) from None


# Plain columns, not ORM entities: no identity map or object per row on a 100,000-row export.
_SELECTED = (col(UsageEvent.id), col(UsageEvent.created_at), col(UsageEvent.request_id), col(User.email),
             col(UsageEvent.user_id), col(UsageEvent.account_id), col(UsageEvent.api_key_id),
             col(UsageEvent.model_public_name), col(UsageEvent.ollama_tag), col(UsageEvent.node),
             col(UsageEvent.endpoint), col(UsageEvent.input_tokens), col(UsageEvent.output_tokens),
             col(UsageEvent.tokens_estimated), col(UsageEvent.cost_pico), col(UsageEvent.latency_ms),
             col(UsageEvent.ttft_ms), col(UsageEvent.status), col(UsageEvent.error_code))


def _row(values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=True))
    row["created_at"] = iso(row["created_at"])
    row["user_email"] = row["user_email"] or ""
    row["tokens_estimated"] = bool(row["tokens_estimated"])
    row["cost_usd"] = usd(row["cost_usd"])
    return row


async def _user_id(session: AsyncSession, email: str) -> str:
    user_id = await session.scalar(sa.select(col(User.id)).where(col(User.email) == email.strip().lower()))
    if user_id is None:
        raise UnknownUser(f"No user has the email {email!r}.")
    return str(user_id)


async def rows(sessions: async_sessionmaker[AsyncSession], query: ExportQuery,
               page_size: int = PAGE_SIZE) -> AsyncIterator[dict[str, Any]]:
    """The events of `query` oldest first, as dicts keyed by COLUMNS (money as decimal USD strings).

    Raises UnknownUser before the first row when `query.email` matches nobody.
    """
    created, ident = col(UsageEvent.created_at), col(UsageEvent.id)
    conditions: list[Any] = [created >= query.since, created < query.until]
    if query.email is not None:
        async with sessions() as session:
            conditions.append(col(UsageEvent.user_id) == await _user_id(session, query.email))
    after: tuple[datetime, int] | None = None
    while True:
        keyset = [] if after is None else [sa.or_(created > after[0], sa.and_(created == after[0], ident > after[1]))]
        statement = (sa.select(*_SELECTED).join(User, col(User.id) == col(UsageEvent.user_id), isouter=True)
                     .where(*conditions, *keyset).order_by(created, ident).limit(page_size))
        async with sessions() as session:
            page = (await session.execute(statement)).all()
        for values in page:
            yield _row(values)
        if len(page) < page_size:
            return
        last_id, last_created = page[-1][0], page[-1][1]
        assert last_id is not None  # a primary key
        after = (last_created, last_id)  # the keyset of the last row


async def lines(sessions: async_sessionmaker[AsyncSession], query: ExportQuery, fmt: str,
                page_size: int = PAGE_SIZE) -> AsyncIterator[bytes]:
    """The export as encoded chunks: CSV (a header line, then one line per event) or JSON Lines."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    if fmt == "csv":
        writer.writeheader()
    chunk: list[bytes] = [buffer.getvalue().encode()] if fmt == "csv" else []
    buffer.seek(0)
    buffer.truncate()
    async for row in rows(sessions, query, page_size):
        if fmt == "csv":
            writer.writerow(row)
            chunk.append(buffer.getvalue().encode())
            buffer.seek(0)
            buffer.truncate()
        else:
            chunk.append(orjson.dumps(row) + b"\n")
        if len(chunk) >= page_size:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)
