"""Holds with owners: every serving process keeps a lease, and the holds of dead owners are settled.

Each process (each uvicorn worker of each replica) registers an `instance_leases` row with an
expiry, renews it every `ttl / 4` seconds, and writes its instance id into every hold it places.
A process that dies without settling (SIGKILL, OOM kill, a container stop timeout, a lost node)
stops renewing. Every live process runs `settle_dead_owners()` at start and every few seconds:
the holds whose owner's lease has expired — or whose owner has no lease row at all — are settled
like any request (gateway/billing/settlement.py, idempotent by request id) with a usage event of
`status: interrupted`, `error_code: instance_lost`.

Charging policy for an interrupted request: what its owner's settlement journal recorded as
relayed to the client (`journaled`), priced at the current registry and never above the hold;
without a journal entry, nothing (the hold is released). So a crash is settled within `ttl` plus
one check interval (20 s + 5 s by default), instead of two hours without an event.

A process that was only paused past its lease (a frozen VM) renews by re-inserting its row; any
of its holds settled meanwhile stay settled, and its own late settlement is then a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.money import cost
from gateway.billing.settlement import Settlement, settle_batch
from gateway.db.models import Account, Hold, InstanceLease, utcnow

log = logging.getLogger("pr.billing")

_leases = InstanceLease.__table__  # type: ignore[attr-defined]
_holds = Hold.__table__  # type: ignore[attr-defined]
_accounts = Account.__table__  # type: ignore[attr-defined]

INTERRUPTED = "interrupted"
INSTANCE_LOST = "instance_lost"


@dataclass(frozen=True)
class Relayed:
    """What a journal recorded as delivered for one request: tokens, and whether Ollama counted them."""

    input_tokens: int
    output_tokens: int
    estimated: bool = True


# pico-USD per input and per output token of a public model name, or None when it is gone
PriceOf = Callable[[str], tuple[int, int] | None]


def new_instance_id() -> str:
    """A unique id for this process: host, pid and a random suffix (at most 64 characters)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Lease:
    """This process's lease. `renew()` registers or extends it; `release()` ends it (clean stop)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], ttl_seconds: float,
                 instance_id: str | None = None) -> None:
        self.instance_id = instance_id or new_instance_id()
        self.ttl = timedelta(seconds=ttl_seconds)
        self._sessions = sessions
        self._started = utcnow()

    @property
    def renew_interval(self) -> float:
        """Seconds between renewals: a quarter of the lease, so three can fail before it expires."""
        return self.ttl.total_seconds() / 4

    async def renew(self) -> None:
        """Extend the lease to now + ttl (re-inserting it if it was reaped). Raises on database errors."""
        expires = utcnow() + self.ttl
        async with self._sessions() as session:
            updated = await session.execute(sa.update(_leases).where(_leases.c.instance_id == self.instance_id)
                                            .values(expires_at=expires).returning(_leases.c.instance_id))
            if updated.first() is None:
                await session.execute(sa.insert(_leases).values(
                    instance_id=self.instance_id, host=socket.gethostname()[:255], pid=os.getpid(),
                    started_at=self._started, expires_at=expires))
            await session.commit()

    async def release(self) -> None:
        """Delete the lease (after a clean drain: this process holds nothing any more)."""
        async with self._sessions() as session:
            await session.execute(sa.delete(_leases).where(_leases.c.instance_id == self.instance_id))
            await session.commit()


async def settle_dead_owners(sessions: async_sessionmaker[AsyncSession], *, price_of: PriceOf,
                             journaled: Mapping[str, Relayed] | None = None,
                             now: datetime | None = None) -> int:
    """Settle every hold whose owner's lease expired (or never existed) as `interrupted`; return how many.

    Each gets one usage event and, when `journaled` has its request id, the charge for what was
    relayed (capped at the hold by settlement); otherwise no charge. Expired leases are then
    deleted. Safe to run from several processes at once (settling is idempotent by request id).
    """
    now = now or utcnow()
    journaled = journaled or {}
    live = sa.select(_leases.c.instance_id).where(_leases.c.expires_at >= now)
    async with sessions() as session:
        rows = (await session.execute(
            sa.select(_holds.c.request_id, _holds.c.account_id, _holds.c.key_id, _holds.c.model_public_name,
                      _holds.c.endpoint, _holds.c.created_at, _accounts.c.user_id)
            .join(_accounts, _accounts.c.id == _holds.c.account_id)
            .where(_holds.c.owner.is_not(None), _holds.c.owner.not_in(live)))).all()
        items = [_interrupted(row, journaled.get(row.request_id), price_of, now) for row in rows]
        if items:
            await settle_batch(session, items)
        await session.execute(sa.delete(_leases).where(_leases.c.expires_at < now))
        await session.commit()
    for item in items:
        log.warning("settled request %s of a lost instance as interrupted (%d output tokens relayed)",
                    item.request_id, item.output_tokens)
    return len(items)


def _interrupted(row: Any, relayed: Relayed | None, price_of: PriceOf,
                 now: datetime) -> Settlement:
    model = str(row.model_public_name or "")
    prices = price_of(model) if relayed is not None else None
    tokens = relayed if relayed is not None else Relayed(0, 0)
    charge = cost(tokens.input_tokens, tokens.output_tokens, *prices) if prices is not None else 0
    created: datetime = row.created_at
    if created.tzinfo is None:  # SQLite returns naive UTC
        created = created.replace(tzinfo=now.tzinfo)
    return Settlement(
        request_id=str(row.request_id), account_id=str(row.account_id), user_id=str(row.user_id),
        api_key_id=None if row.key_id is None else str(row.key_id), model_public_name=model, ollama_tag="",
        node=None, endpoint=str(row.endpoint or ""), input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens, tokens_estimated=tokens.estimated, cost_pico=charge,
        latency_ms=max(0, round((now - created).total_seconds() * 1000)), ttft_ms=None, status=INTERRUPTED,
        error_code=INSTANCE_LOST, registry_version="", created_at=now)
