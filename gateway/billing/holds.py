"""Credit holds: reserve a request's worst case before calling upstream, settle the exact cost after.

    place_worst_case_hold()  PostgreSQL hot path: one statement straight to asyncpg
    place_hold()             one transaction: account (and key monthly limit) conditional UPDATE + holds row
    place_hold_sqlite()      SQLite: the same through the database's writer (plain SQL for the worst case)
    settlement.settle_batch  closes requests: see gateway/billing/settlement.py

Every condition lives inside the UPDATE's WHERE clause, so concurrent requests serialise on the
account row and can never take the free balance (balance minus holds) below zero.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.db.direct import direct_connection
from gateway.db.models import Account, ApiKey, Hold, UsageEvent, utcnow
from gateway.db.sqlite_writer import SqliteWriter

log = logging.getLogger("pr.billing")

FLOOR_PICO = 10**9  # $0.001: below this free balance every request is refused with 402
_accounts = Account.__table__  # type: ignore[attr-defined]
_keys = ApiKey.__table__  # type: ignore[attr-defined]
_holds = Hold.__table__  # type: ignore[attr-defined]
_events = UsageEvent.__table__  # type: ignore[attr-defined]
_sqlite_dialect = SQLiteDialect_pysqlite()


class HoldRefused(Exception):
    """The free balance, or the key's monthly limit, cannot pay for a minimal answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Quote:
    """What a request may cost: the prompt (estimated) and each output token."""

    prompt_pico: int
    output_pico_per_token: int
    max_output_tokens: int  # what the client asked for, or what the context leaves

    @property
    def worst_case(self) -> int:
        return self.prompt_pico + self.max_output_tokens * self.output_pico_per_token

    def output_tokens_for(self, amount: int) -> int:
        """How many output tokens `amount` pays for after the prompt."""
        if self.output_pico_per_token == 0:
            return self.max_output_tokens
        return min(self.max_output_tokens, (amount - self.prompt_pico) // self.output_pico_per_token)

    def minimum(self) -> int:
        """The least hold that still buys one output token (or just the prompt when output is free)."""
        if self.max_output_tokens == 0 or self.output_pico_per_token == 0:
            return self.prompt_pico
        return self.prompt_pico + self.output_pico_per_token


@dataclass(frozen=True)
class HoldOrigin:
    """Who placed a hold and for what: the serving instance (whose lease keeps the hold alive, see
    leases.py), and what the usage event of an interrupted request names."""

    owner: str | None = None
    key_id: str | None = None
    model_public_name: str | None = None
    endpoint: str | None = None


NO_ORIGIN = HoldOrigin()


@dataclass(frozen=True)
class PlacedHold:
    request_id: str
    amount_pico: int
    output_tokens: int  # output tokens the hold pays for (the gateway caps num_predict to it)
    key_held: bool


def current_month(now: datetime | None = None) -> str:
    return (now or utcnow()).strftime("%Y-%m")


def _key_spend(month: str) -> sa.ColumnElement[int]:
    return sa.case((_keys.c.spend_month == month, _keys.c.spend_pico), else_=0)


async def _free_amounts(session: AsyncSession, account_id: str, key_id: str | None,
                        limit_key: bool, month: str) -> tuple[int, int | None]:
    free = (await session.execute(sa.select(_accounts.c.balance_pico - _accounts.c.held_pico)
                                  .where(_accounts.c.id == account_id))).scalar_one()
    key_free = None
    if limit_key and key_id is not None:
        key_free = (await session.execute(
            sa.select(_keys.c.monthly_limit_pico - _key_spend(month) - _keys.c.held_pico)
            .where(_keys.c.id == key_id))).scalar_one()
    return int(free), (None if key_free is None else int(key_free))


async def _try_hold(session: AsyncSession, account_id: str, key_id: str | None, limit_key: bool,
                    amount: int, month: str) -> bool:
    taken = (await session.execute(
        sa.update(_accounts)
        .where(_accounts.c.id == account_id, _accounts.c.balance_pico - _accounts.c.held_pico >= amount)
        .values(held_pico=_accounts.c.held_pico + amount)
        .returning(_accounts.c.id))).first()
    if taken is None:
        return False
    if limit_key and key_id is not None:
        key_taken = (await session.execute(
            sa.update(_keys)
            .where(_keys.c.id == key_id, _keys.c.monthly_limit_pico - _key_spend(month) - _keys.c.held_pico >= amount)
            .values(held_pico=_keys.c.held_pico + amount, spend_pico=_key_spend(month), spend_month=month)
            .returning(_keys.c.id))).first()
        if key_taken is None:
            return False
    return True


async def place_hold(session: AsyncSession, *, request_id: str, account_id: str, key_id: str | None,
                     key_has_limit: bool, quote: Quote, origin: HoldOrigin = NO_ORIGIN,
                     attempts: int = 4) -> PlacedHold:
    """Reserve the worst case, or as much output as the balance and the key's limit pay for.

    Commits on success; raises HoldRefused (and rolls back) when not even a minimal answer is covered.
    """
    month = current_month()
    amount = quote.worst_case
    for _ in range(attempts):
        if await _try_hold(session, account_id, key_id, key_has_limit, amount, month):
            session.add(Hold(request_id=request_id, account_id=account_id,
                             api_key_id=key_id if key_has_limit else None, amount_pico=amount,
                             owner=origin.owner, key_id=origin.key_id,
                             model_public_name=origin.model_public_name, endpoint=origin.endpoint))
            await session.commit()
            return PlacedHold(request_id, amount, quote.output_tokens_for(amount), key_has_limit)
        await session.rollback()
        # The worst case does not fit: hold what is free (rare path, so the extra reads are fine).
        free, key_free = await _free_amounts(session, account_id, key_id, key_has_limit, month)
        await session.rollback()
        if free < FLOOR_PICO:
            raise HoldRefused("Your credit balance is too low. Top up at /api/billing/topup.")
        if key_free is not None and key_free < quote.minimum():
            raise HoldRefused("This API key has reached its monthly spending limit.")
        available = free if key_free is None else min(free, key_free)
        if available < quote.minimum():
            raise HoldRefused("Your credit balance cannot pay for this request's prompt and a minimal answer.")
        amount = min(quote.worst_case, available)
    raise HoldRefused("Your balance is changing too quickly to reserve credits; retry.")


async def place_hold_sqlite(writer: SqliteWriter, *, request_id: str, account_id: str, key_id: str | None,
                            key_has_limit: bool, quote: Quote, origin: HoldOrigin = NO_ORIGIN) -> PlacedHold:
    """`place_hold` on SQLite, through the database's writer (gateway/db/sqlite_writer.py): never holding
    the write lock across event-loop turns. The worst case for a key without a monthly limit is held in
    plain SQL (`_sqlite_worst_case`); anything else runs `place_hold` itself as one writer job. Raises
    HoldRefused as place_hold does."""
    if not key_has_limit:
        created = _SQLITE_TIME(utcnow())
        taken = await writer.run_sql(lambda connection: _sqlite_worst_case(
            connection, quote.worst_case, account_id, request_id, created, origin))
        if taken:
            return PlacedHold(request_id, quote.worst_case, quote.max_output_tokens, False)
    return await writer.run(lambda session: place_hold(
        session, request_id=request_id, account_id=account_id, key_id=key_id, key_has_limit=key_has_limit,
        quote=quote, origin=origin))


# SQLite, inside the writer's BEGIN IMMEDIATE: the two statements of place_hold's common case, without
# SQLAlchemy's session and compiler (which cost several times SQLite's own work here).
_SQLITE_TAKE = ("UPDATE accounts SET held_pico = held_pico + ? WHERE id = ? AND balance_pico - held_pico >= ?"
                " RETURNING id")
_SQLITE_INSERT_HOLD = (
    "INSERT INTO holds (request_id, account_id, api_key_id, amount_pico, created_at, owner, key_id,"
    " model_public_name, endpoint) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?)")
# created_at exactly as SQLAlchemy stores it on SQLite (a text timestamp), so both paths' rows compare alike
_SQLITE_TIME = _holds.c.created_at.type.dialect_impl(_sqlite_dialect).bind_processor(_sqlite_dialect)


def _sqlite_worst_case(connection: sqlite3.Connection, amount: int, account_id: str, request_id: str,
                       created: str, origin: HoldOrigin) -> bool:
    """Hold `amount` on the account and record the hold; False (nothing written) when it does not fit."""
    if connection.execute(_SQLITE_TAKE, (amount, account_id, amount)).fetchone() is None:
        return False
    connection.execute(_SQLITE_INSERT_HOLD, (request_id, account_id, amount, created, origin.owner, origin.key_id,
                                             origin.model_public_name, origin.endpoint))
    return True


# PostgreSQL, autocommit: the conditional UPDATE and the holds row in ONE statement (one round trip,
# atomic on its own). An empty result means the worst case does not fit; place_hold() then decides.
_HOLD_IN_ONE_STATEMENT = """
    WITH taken AS (
        UPDATE accounts SET held_pico = held_pico + $1
        WHERE id = $2 AND balance_pico - held_pico >= $1
        RETURNING id)
    INSERT INTO holds (request_id, account_id, api_key_id, amount_pico, created_at,
                       owner, key_id, model_public_name, endpoint)
    SELECT $3, id, NULL, $1, $4, $5, $6, $7, $8 FROM taken
    RETURNING request_id
"""


# The same for a key with a monthly limit: the key's limit is reserved too, and the holds row names the
# key. Lock order accounts -> api_keys, as in place_hold and settlement. Not atomic on its own (the
# account can be taken while the key is not), so it runs in a transaction that is rolled back when the
# statement returns nothing.
_HOLD_WITH_KEY_LIMIT = """
    WITH taken AS (
        UPDATE accounts SET held_pico = held_pico + $1
        WHERE id = $2 AND balance_pico - held_pico >= $1
        RETURNING id),
    key_taken AS (
        UPDATE api_keys SET held_pico = held_pico + $1,
               spend_pico = CASE WHEN spend_month = $9 THEN spend_pico ELSE 0 END, spend_month = $9
        WHERE id = $10 AND EXISTS (SELECT 1 FROM taken)
          AND monthly_limit_pico - CASE WHEN spend_month = $9 THEN spend_pico ELSE 0 END - held_pico >= $1
        RETURNING id)
    INSERT INTO holds (request_id, account_id, api_key_id, amount_pico, created_at,
                       owner, key_id, model_public_name, endpoint)
    SELECT $3, taken.id, key_taken.id, $1, $4, $5, $6, $7, $8 FROM taken, key_taken
    RETURNING request_id
"""


async def place_worst_case_hold(engine: AsyncEngine, *, request_id: str, account_id: str,
                                quote: Quote, origin: HoldOrigin = NO_ORIGIN,
                                limited_key_id: str | None = None) -> PlacedHold | None:
    """The critical-path fast path (PostgreSQL): hold the worst case, or return None when it does not
    fit (the caller falls back to `place_hold`, which holds what is free). With `limited_key_id` (a key
    with a monthly limit) the key's limit is reserved too, as `place_hold` does.

    The statement goes straight to a kept asyncpg connection (gateway/db/direct.py): SQLAlchemy's
    statement machinery cost four times the round trip itself here, and its per-use checkout about as
    much again. Without a key limit it runs outside any transaction (one round trip, atomic on its own);
    with one, inside BEGIN ... COMMIT (three). A connection that fails here is discarded.
    """
    now = utcnow()
    async with direct_connection(engine) as raw:
        if limited_key_id is None:
            taken = await raw.fetchval(
                _HOLD_IN_ONE_STATEMENT, quote.worst_case, account_id, request_id, now,
                origin.owner, origin.key_id, origin.model_public_name, origin.endpoint)
        else:
            transaction = raw.transaction()
            await transaction.start()
            try:
                taken = await raw.fetchval(
                    _HOLD_WITH_KEY_LIMIT, quote.worst_case, account_id, request_id, now,
                    origin.owner, origin.key_id, origin.model_public_name, origin.endpoint,
                    current_month(now), limited_key_id)
            except BaseException:
                await transaction.rollback()
                raise
            if taken is None:
                await transaction.rollback()  # the account may have been taken without the key
            else:
                await transaction.commit()
    if taken is None:
        return None
    return PlacedHold(request_id, quote.worst_case, quote.max_output_tokens, limited_key_id is not None)


async def release_stale_holds(session: AsyncSession, *, older_than: timedelta) -> int:
    """Release holds left by a crashed process (no request runs this long); no charge. Commits."""
    cutoff = utcnow() - older_than
    stale = (await session.execute(sa.select(_holds.c.request_id, _holds.c.account_id, _holds.c.api_key_id,
                                             _holds.c.amount_pico).where(_holds.c.created_at < cutoff))).all()
    for row in stale:
        gone = (await session.execute(sa.delete(_holds).where(_holds.c.request_id == row.request_id)
                                      .returning(_holds.c.request_id))).first()
        if gone is None:
            continue
        await session.execute(sa.update(_accounts).where(_accounts.c.id == row.account_id)
                              .values(held_pico=_accounts.c.held_pico - row.amount_pico))
        if row.api_key_id is not None:
            await session.execute(sa.update(_keys).where(_keys.c.id == row.api_key_id)
                                  .values(held_pico=_keys.c.held_pico - row.amount_pico))
        log.warning("released stale hold of request %s (%d pico-USD)", row.request_id, row.amount_pico)
    await session.commit()
    return len(stale)
