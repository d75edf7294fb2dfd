"""After the load: every 2xx the clients saw has exactly one usage event, and every ledger balances."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(sa.text(sql), params)).scalar_one())


async def usage_event_count(engine: AsyncEngine, account_id: str) -> int:
    return await _scalar(engine, "SELECT count(*) FROM usage_events WHERE account_id = :a", a=account_id)


async def wait_settled(engine: AsyncEngine, account_id: str, *, at_least: int, timeout: float = 30.0) -> float:
    """Poll until no hold is open and the account has `at_least` events; return the seconds it took."""
    start = time.monotonic()
    while True:
        holds = await _scalar(engine, "SELECT count(*) FROM holds")
        events = await usage_event_count(engine, account_id)
        if holds == 0 and events >= at_least:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return -1.0
        await asyncio.sleep(0.25)


def seen_ids(folder: Path) -> list[str]:
    """Every request id the clients saw answered 2xx (one file per client run)."""
    ids: list[str] = []
    for path in sorted(folder.glob("*.ids")):
        ids += [line for line in path.read_text().splitlines() if line]
    return ids


async def correctness(engine: AsyncEngine, account_id: str, ids: list[str]) -> dict[str, Any]:
    """The check the issue asks for, with every count it rests on."""
    async with engine.connect() as connection:
        rows = (await connection.execute(sa.text(
            "SELECT request_id, status FROM usage_events WHERE account_id = :a"), {"a": account_id})).all()
        duplicated = int((await connection.execute(sa.text(
            "SELECT count(*) FROM (SELECT request_id FROM usage_events GROUP BY request_id HAVING count(*) > 1) d")))
            .scalar_one())
        ledgers = (await connection.execute(sa.text(
            "SELECT a.id, a.balance_pico, a.held_pico, COALESCE(SUM(t.amount_pico), 0) AS ledger "
            "FROM accounts a LEFT JOIN credit_transactions t ON t.account_id = a.id "
            "GROUP BY a.id, a.balance_pico, a.held_pico"))).all()
        open_holds = int((await connection.execute(sa.text("SELECT count(*) FROM holds"))).scalar_one())
        charged = int((await connection.execute(sa.text(
            "SELECT COALESCE(SUM(cost_pico), 0) FROM usage_events WHERE account_id = :a"), {"a": account_id}))
            .scalar_one())
        debited = int((await connection.execute(sa.text(
            "SELECT COALESCE(-SUM(amount_pico), 0) FROM credit_transactions WHERE account_id = :a AND kind = 'usage'"),
            {"a": account_id})).scalar_one())
    status_of = {row.request_id: row.status for row in rows}
    seen = Counter(ids)
    missing = [rid for rid in seen if rid not in status_of]
    not_success = [rid for rid in seen if rid in status_of and status_of[rid] != "success"]
    unseen = Counter(status for rid, status in status_of.items() if rid not in seen)
    unbalanced = [{"account": row.id, "balance": int(row.balance_pico), "ledger": int(row.ledger),
                   "held": int(row.held_pico)} for row in ledgers
                  if int(row.balance_pico) != int(row.ledger) or int(row.held_pico) != 0]
    passed = (not missing and not not_success and duplicated == 0 and max(seen.values(), default=1) == 1
              and not unbalanced and open_holds == 0 and charged == debited)
    return {
        "passed": passed,
        "client_2xx": sum(seen.values()),
        "client_2xx_repeated_ids": sum(count - 1 for count in seen.values() if count > 1),
        "usage_events": len(rows),
        "client_2xx_without_event": len(missing),
        "client_2xx_event_not_success": len(not_success),
        "duplicate_events": duplicated,
        "events_not_seen_by_client": dict(unseen),
        "accounts_checked": len(ledgers),
        "accounts_unbalanced": unbalanced,
        "open_holds": open_holds,
        "usage_cost_pico": charged,
        "usage_ledger_debits_pico": debited,
        "examples_missing": missing[:5],
    }


async def pg_stats(admin_dsn: str, database: str) -> dict[str, int]:
    """pg_stat_database counters of the bench database (updated by each backend about once a second)."""
    import asyncpg

    connection = await asyncpg.connect(admin_dsn)
    try:
        row = await connection.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched, sessions "
            "FROM pg_stat_database WHERE datname = $1", database)
    finally:
        await connection.close()
    return {key: int(value) for key, value in dict(row).items()} if row else {}


async def backend_pids(admin_dsn: str, database: str) -> list[int]:
    """Process ids of the PostgreSQL backends connected to `database` (their CPU is read from /proc)."""
    import asyncpg

    connection = await asyncpg.connect(admin_dsn)
    try:
        rows = await connection.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await connection.close()
    return [int(row["pid"]) for row in rows]
