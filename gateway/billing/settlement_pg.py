"""Settlement on PostgreSQL, straight to asyncpg: a batch in two prepared statements, one transaction.

    BEGIN
    release + lock     DELETE the batch's holds RETURNING them, and SELECT its accounts FOR UPDATE
                       (in id order: no deadlock between replicas), in one statement
    write              UPDATE accounts, INSERT credit_transactions, UPDATE api_keys, INSERT usage_events,
                       each from arrays (unnest), as data-modifying CTEs of one statement
    lost holds         only when some hold was not found: SELECT which of those requests have a usage event
                       (the accounts are locked by then; see `settlement` on lost holds)
    COMMIT

The money rules are those of `settlement.plan_batch`, shared with the SQLAlchemy path
(`settlement.settle_batch`, used for SQLite and inside callers' sessions), so both write the same
rows. Four round trips a batch whatever its size; SQLAlchemy's path takes eight, and its statement
machinery cost about four times the database work for a batch of one (bench/micro.py, see
bench/notes/proposals.md). asyncpg prepares each statement once per connection (its statement cache).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.billing.settlement import Plan, Settlement, plan_batch
from gateway.db.direct import direct_connection
from gateway.db.models import utcnow

# One row per hold deleted ('h', request id, amount, 1 when it also held on the key, NULL) and per
# account locked ('a', id, balance, held, trial). The lock is a MATERIALIZED CTE so the accounts are read
# (and locked, in id order) in full whatever the outer query does.
_RELEASE_AND_LOCK = """
    WITH locked AS MATERIALIZED (
        SELECT id, balance_pico, held_pico, trial_pico FROM accounts
        WHERE id = ANY($2::varchar[]) ORDER BY id FOR UPDATE),
    gone AS (
        DELETE FROM holds WHERE request_id = ANY($1::varchar[])
        RETURNING request_id, amount_pico, (api_key_id IS NOT NULL)::int AS keyed)
    SELECT 'h' AS kind, request_id AS id, amount_pico AS a, keyed::bigint AS b, NULL::bigint AS c FROM gone
    UNION ALL
    SELECT 'a', id, balance_pico, held_pico, trial_pico FROM locked
"""

_RECORDED = "SELECT request_id FROM usage_events WHERE request_id = ANY($1::varchar[])"

# Every write of the batch in one statement. Data-modifying CTEs run once and to completion whether or
# not the outer statement reads them; each touches another table, so none sees another's rows. The ledger
# rows are inserted in batch order (ORDER BY the arrays' ordinality), so their ids follow the balances.
_WRITE = """
    WITH accounts_done AS (
        UPDATE accounts AS a SET balance_pico = a.balance_pico - u.charged, held_pico = a.held_pico - u.released,
               trial_pico = a.trial_pico - u.trial_used, updated_at = $1
        FROM unnest($2::varchar[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u(id, charged, released, trial_used)
        WHERE a.id = u.id),
    ledger_done AS (
        INSERT INTO credit_transactions (account_id, kind, amount_pico, trial_pico, balance_after_pico, request_id,
                                         note, actor_user_id, created_at)
        SELECT l.account_id, 'usage', l.amount, l.trial, l.after, l.request_id, NULL, NULL, $1
        FROM unnest($6::varchar[], $7::bigint[], $8::bigint[], $9::bigint[], $10::varchar[])
             WITH ORDINALITY AS l(account_id, amount, trial, after, request_id, n)
        ORDER BY l.n),
    keys_done AS (
        UPDATE api_keys AS k
        SET spend_pico = CASE WHEN k.spend_month = u.month THEN k.spend_pico ELSE 0 END + u.charged,
            spend_month = u.month, held_pico = k.held_pico - u.released
        FROM unnest($11::varchar[], $12::varchar[], $13::bigint[], $14::bigint[]) AS u(id, month, charged, released)
        WHERE k.id = u.id)
    INSERT INTO usage_events (request_id, account_id, user_id, api_key_id, model_public_name, ollama_tag, node,
                              endpoint, input_tokens, output_tokens, tokens_estimated, cost_pico, cost_capped_pico,
                              latency_ms, ttft_ms, status, error_code, registry_version, created_at)
    SELECT * FROM unnest($15::varchar[], $16::varchar[], $17::varchar[], $18::varchar[], $19::varchar[],
                         $20::varchar[], $21::varchar[], $22::varchar[], $23::int[], $24::int[], $25::bool[],
                         $26::bigint[], $27::bigint[], $28::int[], $29::int[], $30::varchar[], $31::varchar[],
                         $32::varchar[], $33::timestamptz[])
"""

# A key settled for two months in one batch (a batch across midnight at a month's end): one UPDATE per
# (key, month) in order, as a statement cannot update the same row twice.
_KEY_ONE = """
    UPDATE api_keys SET spend_pico = CASE WHEN spend_month = $2 THEN spend_pico ELSE 0 END + $3,
           spend_month = $2, held_pico = held_pico - $4
    WHERE id = $1
"""


async def settle_batch_pg(engine: AsyncEngine, items: list[Settlement]) -> list[int | None]:
    """Settle and commit `items` on PostgreSQL; for each item the pico-USD charged, or None when its
    request was already settled (also a repeat within the batch). Idempotent by request id.

    Raises what asyncpg raises (nothing is committed then); a connection that failed is discarded
    (gateway/db/direct.py), never handed out again.
    """
    ids = list(dict.fromkeys(item.request_id for item in items))
    if not ids:
        return []
    accounts = sorted({item.account_id for item in items})
    async with direct_connection(engine) as raw, raw.transaction():
        plan = await _release_and_plan(raw, items, ids, accounts)
        if plan.events:
            await _write(raw, plan)
    return plan.results


async def _release_and_plan(raw: Any, items: list[Settlement], ids: list[str], accounts: list[str]) -> Plan:
    open_holds: dict[str, tuple[int, bool]] = {}
    locked: dict[str, tuple[int, int, int]] = {}
    for kind, key, a, b, c in await raw.fetch(_RELEASE_AND_LOCK, ids, accounts):
        if kind == "h":
            open_holds[key] = (a, bool(b))
        else:
            locked[key] = (a, b, c)
    missing = [request_id for request_id in ids if request_id not in open_holds]
    lost: set[str] = set()
    if missing:  # never on the normal path, where every item has its hold
        lost = set(missing) - {row[0] for row in await raw.fetch(_RECORDED, missing)}
    return plan_batch(items, open_holds, locked, utcnow(), lost)


async def _write(raw: Any, plan: Plan) -> None:
    keys = plan.keys
    several_months = len({key for key, _, _, _ in keys}) < len(keys)
    key_columns = _columns([] if several_months else keys, 4)
    events = plan.events
    await raw.execute(
        _WRITE, plan.now, *_columns(plan.accounts, 4), *_columns(plan.ledger, 5), *key_columns,
        [item.request_id for item, _ in events], [item.account_id for item, _ in events],
        [item.user_id for item, _ in events], [item.api_key_id for item, _ in events],
        [item.model_public_name for item, _ in events], [item.ollama_tag for item, _ in events],
        [item.node for item, _ in events], [item.endpoint for item, _ in events],
        [item.input_tokens for item, _ in events], [item.output_tokens for item, _ in events],
        [item.tokens_estimated for item, _ in events], [charge for _, charge in events],
        [item.cost_pico - charge for item, charge in events], [item.latency_ms for item, _ in events],
        [item.ttft_ms for item, _ in events], [item.status for item, _ in events],
        [item.error_code for item, _ in events], [item.registry_version for item, _ in events],
        [item.created_at for item, _ in events])
    if several_months:
        await raw.executemany(_KEY_ONE, keys)


def _columns(rows: list[Any], width: int) -> list[list[Any]]:
    """Rows of `width` values as `width` column lists (what unnest() takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
