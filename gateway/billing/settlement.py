"""Settlement: close admitted requests — release each hold, debit the exact cost with its ledger row,
update the key's monthly spend and insert the usage event — for a whole batch in one transaction.

Set-based: a fixed handful of statements per batch, whatever its size:

    DELETE holds ... RETURNING        which requests are still open (settling is idempotent)
    SELECT accounts ... FOR UPDATE    their balances, locked in id order (no deadlock between replicas)
    UPDATE accounts (executemany)     one row per account: balance minus charges, held minus holds
    INSERT credit_transactions        one `usage` row per charged request, with the balance after it
    UPDATE api_keys (executemany)     spend per key and month, key holds released
    INSERT usage_events

Balances after each charge are computed from the locked balance in batch order, so the ledger rows
read in id order still sum to the balance. A request is never charged more than its hold: the
hold was reserved within both the account's free balance and the key's monthly limit, so neither
can be overrun. When Ollama's counts cost more (a prompt above its bound, see bound.py), the hold
is charged and the rest is recorded on the event as `cost_capped_pico`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import Account, ApiKey, CreditTransaction, Hold, UsageEvent, utcnow

log = logging.getLogger("pr.billing")

_accounts = Account.__table__  # type: ignore[attr-defined]
_keys = ApiKey.__table__  # type: ignore[attr-defined]
_holds = Hold.__table__  # type: ignore[attr-defined]
_ledger = CreditTransaction.__table__  # type: ignore[attr-defined]
_events = UsageEvent.__table__  # type: ignore[attr-defined]

_UPDATE_ACCOUNT = (
    sa.update(_accounts)
    .where(_accounts.c.id == sa.bindparam("account"))
    .values(balance_pico=_accounts.c.balance_pico - sa.bindparam("charged"),
            held_pico=_accounts.c.held_pico - sa.bindparam("released"), updated_at=sa.bindparam("now"),
            trial_pico=_accounts.c.trial_pico - sa.bindparam("trial_used"))
)
_KEY_SPEND = sa.case((_keys.c.spend_month == sa.bindparam("month"), _keys.c.spend_pico), else_=0)
_UPDATE_KEY = (
    sa.update(_keys)
    .where(_keys.c.id == sa.bindparam("key"))
    .values(spend_pico=_KEY_SPEND + sa.bindparam("charged"), spend_month=sa.bindparam("month"),
            held_pico=_keys.c.held_pico - sa.bindparam("released"))
)


@dataclass(frozen=True)
class Settlement:
    """Everything needed to close one admitted request: money and its usage event together."""

    request_id: str
    account_id: str
    user_id: str
    api_key_id: str | None
    model_public_name: str
    ollama_tag: str
    node: str | None
    endpoint: str
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    cost_pico: int
    latency_ms: int
    ttft_ms: int | None
    status: str  # success | error | cancelled
    error_code: str | None
    registry_version: str
    created_at: datetime


async def settle_batch(session: AsyncSession, items: list[Settlement]) -> list[int | None]:
    """Settle `items` inside the caller's transaction; for each item the pico-USD charged, or None
    when its request was already settled (also a repeat within the batch)."""
    ids = list(dict.fromkeys(item.request_id for item in items))
    if not ids:
        return []
    open_holds = {row.request_id: (int(row.amount_pico), row.api_key_id is not None) for row in await session.execute(
        sa.delete(_holds).where(_holds.c.request_id.in_(ids))
        .returning(_holds.c.request_id, _holds.c.amount_pico, _holds.c.api_key_id))}
    todo = []
    for item in items:
        found = open_holds.pop(item.request_id, None)  # popped: a repeat in the batch is not settled twice
        if found is not None:
            todo.append((item, found[0], found[1]))
    if not todo:
        return [None] * len(items)
    return await _apply(session, items, todo)


async def _apply(session: AsyncSession, items: list[Settlement],
                 todo: list[tuple[Settlement, int, bool]]) -> list[int | None]:
    account_ids = sorted({item.account_id for item, _, _ in todo})
    rows = (await session.execute(
        sa.select(_accounts.c.id, _accounts.c.balance_pico, _accounts.c.held_pico, _accounts.c.trial_pico)
        .where(_accounts.c.id.in_(account_ids)).order_by(_accounts.c.id).with_for_update())).all()
    balance = {row.id: int(row.balance_pico) for row in rows}
    held = {row.id: int(row.held_pico) for row in rows}
    trial = {row.id: int(row.trial_pico) for row in rows}  # the trial bucket is spent first
    trial_used: dict[str, int] = defaultdict(int)
    charged: dict[str, int] = defaultdict(int)
    released: dict[str, int] = defaultdict(int)
    key_updates: dict[tuple[str, str], list[int]] = {}
    ledger_rows, event_rows = [], []
    charges: dict[str, int] = {}
    now = utcnow()
    for item, hold, key_held in todo:
        account = item.account_id
        held[account] -= hold
        released[account] += hold
        charge = min(item.cost_pico, hold, max(0, balance[account] - held[account]))
        if charge < item.cost_pico:
            log.warning("request %s cost %d pico-USD, above its hold of %d; charging %d", item.request_id,
                        item.cost_pico, hold, charge)
        balance[account] -= charge
        charged[account] += charge
        charges[item.request_id] = charge
        from_trial = min(charge, trial[account])
        trial[account] -= from_trial
        trial_used[account] += from_trial
        if charge:
            ledger_rows.append({"account_id": account, "kind": "usage", "amount_pico": -charge,
                                "trial_pico": -from_trial, "balance_after_pico": balance[account],
                                "request_id": item.request_id, "note": None, "actor_user_id": None, "created_at": now})
        if item.api_key_id is not None:
            entry = key_updates.setdefault((item.api_key_id, item.created_at.strftime("%Y-%m")), [0, 0])
            entry[0] += charge
            entry[1] += hold if key_held else 0
        event_rows.append(_event_row(item, charge))
    await session.execute(_UPDATE_ACCOUNT, [{"account": account, "charged": charged[account],
                                             "released": released[account], "trial_used": trial_used[account],
                                             "now": now} for account in account_ids])
    if ledger_rows:
        await session.execute(sa.insert(_ledger), ledger_rows)
    if key_updates:
        await session.execute(_UPDATE_KEY, [{"key": key, "month": month, "charged": spent, "released": freed}
                                            for (key, month), (spent, freed) in key_updates.items()])
    await session.execute(sa.insert(_events), event_rows)
    results: list[int | None] = []
    for item in items:
        results.append(charges.pop(item.request_id, None))  # a repeat in the batch gets None
    return results


def _event_row(item: Settlement, charge: int) -> dict[str, object]:
    return {
        "request_id": item.request_id, "account_id": item.account_id, "user_id": item.user_id,
        "api_key_id": item.api_key_id, "model_public_name": item.model_public_name, "ollama_tag": item.ollama_tag,
        "node": item.node, "endpoint": item.endpoint, "input_tokens": item.input_tokens,
        "output_tokens": item.output_tokens, "tokens_estimated": item.tokens_estimated, "cost_pico": charge,
        "cost_capped_pico": item.cost_pico - charge,
        "latency_ms": item.latency_ms, "ttft_ms": item.ttft_ms, "status": item.status, "error_code": item.error_code,
        "registry_version": item.registry_version, "created_at": item.created_at,
    }


async def settle(session: AsyncSession, item: Settlement) -> int | None:
    """Settle one request (a batch of one)."""
    return (await settle_batch(session, [item]))[0]
