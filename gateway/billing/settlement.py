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

A request whose hold is gone was settled already, unless it has no usage event: then its hold was
lost (SQLite on power loss or an OS crash loses its last ~50 ms of commits, the holds among them,
while the settlement journal keeps the settlements; see gateway/db/engine.py). Such a request is
settled now, charged within the free balance (`balance - held`, never below zero) with the rest
recorded as `cost_capped_pico`. Only hold-less items cost the extra lookup (one query for them all),
made after their accounts are locked: whoever settled the request before holds its account's row
until it commits, so the lookup sees its event and a request is never settled twice.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
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
    missing = [request_id for request_id in ids if request_id not in open_holds]
    # Hold-less items may have lost their hold and be settled now: their accounts are locked too.
    account_ids = sorted({item.account_id for item in items if missing or item.request_id in open_holds})
    rows = (await session.execute(
        sa.select(_accounts.c.id, _accounts.c.balance_pico, _accounts.c.held_pico, _accounts.c.trial_pico)
        .where(_accounts.c.id.in_(account_ids)).order_by(_accounts.c.id).with_for_update())).all()
    lost = await unrecorded(session, missing) if missing else set()
    plan = plan_batch(items, open_holds, {row.id: (int(row.balance_pico), int(row.held_pico), int(row.trial_pico))
                                          for row in rows}, utcnow(), lost)
    if not plan.accounts:
        return plan.results
    await session.execute(_UPDATE_ACCOUNT, [{"account": account, "charged": charged, "released": released,
                                             "trial_used": trial_used, "now": plan.now}
                                            for account, charged, released, trial_used in plan.accounts])
    if plan.ledger:
        await session.execute(sa.insert(_ledger), [{
            "account_id": account, "kind": "usage", "amount_pico": amount, "trial_pico": trial,
            "balance_after_pico": after, "request_id": request_id, "note": None, "actor_user_id": None,
            "created_at": plan.now} for account, amount, trial, after, request_id in plan.ledger])
    if plan.keys:
        await session.execute(_UPDATE_KEY, [{"key": key, "month": month, "charged": spent, "released": freed}
                                            for key, month, spent, freed in plan.keys])
    await session.execute(sa.insert(_events), [_event_row(item, charge) for item, charge in plan.events])
    return plan.results


async def unrecorded(session: AsyncSession, request_ids: list[str]) -> set[str]:
    """Which of `request_ids` have no usage event (one query). Run with their accounts locked."""
    recorded = set((await session.execute(
        sa.select(_events.c.request_id).where(_events.c.request_id.in_(request_ids)))).scalars())
    return set(request_ids) - recorded


@dataclass
class Plan:
    """What settling a batch writes, computed from its open holds and its locked account rows.

    accounts: (account id, charged, hold released, taken from the trial bucket), in id order
    ledger:   (account id, amount (negative), trial part (negative), balance after, request id), in batch order
    keys:     (key id, month "YYYY-MM", charged, key hold released), one per key and month
    events:   (settlement, charged) of each request settled now
    results:  per item of the batch, the pico-USD charged, or None (already settled, or a repeat)
    """

    now: datetime
    accounts: list[tuple[str, int, int, int]] = field(default_factory=list)
    ledger: list[tuple[str, int, int, int, str]] = field(default_factory=list)
    keys: list[tuple[str, str, int, int]] = field(default_factory=list)
    events: list[tuple[Settlement, int]] = field(default_factory=list)
    results: list[int | None] = field(default_factory=list)


def plan_batch(items: list[Settlement], open_holds: dict[str, tuple[int, bool]],
               locked: dict[str, tuple[int, int, int]], now: datetime, lost: Collection[str] = ()) -> Plan:
    """The writes that settle `items` (the money rules, shared by both database paths).

    `open_holds`: request id -> (hold in pico-USD, whether it also holds on the key) of the holds just
    deleted; `locked`: account id -> (balance, held, trial) read under lock; `lost`: request ids without
    a hold and without a usage event (their hold was lost, so they were never settled). Items of
    `lost` are settled with no hold to release, charged at most the free balance (balance - held).
    Other items without an open hold (already settled, or a repeat in the batch) are skipped. Raises
    KeyError when a settled item's account is not in `locked` (its row does not exist): the caller's
    transaction must then fail.
    """
    plan = Plan(now)
    todo: list[tuple[Settlement, int | None, bool]] = []  # (item, its hold or None when lost, key held)
    remaining = dict(open_holds)
    unsettled = set(lost) - remaining.keys()
    for item in items:
        found = remaining.pop(item.request_id, None)  # popped: a repeat in the batch is not settled twice
        if found is not None:
            todo.append((item, found[0], found[1]))
        elif item.request_id in unsettled and item.account_id in locked:  # no account row: nothing to charge
            unsettled.discard(item.request_id)
            todo.append((item, None, False))
    if not todo:
        plan.results = [None] * len(items)
        return plan
    balance = {account: values[0] for account, values in locked.items()}
    held = {account: values[1] for account, values in locked.items()}
    trial = {account: values[2] for account, values in locked.items()}  # the trial bucket is spent first
    trial_used: dict[str, int] = defaultdict(int)
    charged: dict[str, int] = defaultdict(int)
    released: dict[str, int] = defaultdict(int)
    key_updates: dict[tuple[str, str], list[int]] = {}
    charges: dict[str, int] = {}
    for item, hold, key_held in todo:
        account = item.account_id
        if hold is None:  # lost: nothing to release, the free balance bounds the charge
            released[account] += 0  # the account row is still written (and listed in plan.accounts)
            charge = min(item.cost_pico, max(0, balance[account] - held[account]))
            log.warning("request %s had lost its hold; settling it now, charging %d of its %d pico-USD",
                        item.request_id, charge, item.cost_pico)
            hold = 0
        else:
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
            plan.ledger.append((account, -charge, -from_trial, balance[account], item.request_id))
        if item.api_key_id is not None:
            entry = key_updates.setdefault((item.api_key_id, item.created_at.strftime("%Y-%m")), [0, 0])
            entry[0] += charge
            entry[1] += hold if key_held else 0
        plan.events.append((item, charge))
    plan.accounts = [(account, charged[account], released[account], trial_used[account])
                     for account in sorted(released)]
    plan.keys = [(key, month, spent, freed) for (key, month), (spent, freed) in key_updates.items()]
    for item in items:
        plan.results.append(charges.pop(item.request_id, None))  # a repeat in the batch gets None
    return plan


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
