"""Holds with owners: every serving process keeps a lease, and the holds of dead owners are settled.

Each process (each uvicorn worker of each replica) registers an `instance_leases` row with an
expiry, renews it every `ttl / 4` seconds, and writes its instance id into every hold it places.
A process that dies without settling (SIGKILL, OOM kill, a container stop timeout, a lost node)
stops renewing. Every live process runs `settle_dead_owners()` at start and every few seconds:
the holds whose owner's lease has expired — or whose owner has no lease row at all — are settled
like any request (gateway/billing/settlement.py, idempotent by request id) with a usage event of
`status: interrupted`, `error_code: instance_lost`.

Charging policy for an interrupted request: what its process's settlement journal recorded as
relayed — billed when that journal is replayed (gateway/billing/journal.py), which a restart on
the same DATA_DIR does before it settles lapsed leases — else nothing: a hold settled here is
released with no charge. So a crash is settled within `ttl` plus one check interval (20 s + 5 s
by default), instead of two hours without an event.

A process that was only paused past its lease (a frozen VM) renews by re-inserting its row; any
of its holds settled meanwhile stay settled, and its own late settlement is then a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.settlement import Settlement, settle_batch
from gateway.db.engine import write_transaction
from gateway.db.models import Account, Hold, InstanceLease, utcnow

log = logging.getLogger("pr.billing")

_leases = InstanceLease.__table__  # type: ignore[attr-defined]
_holds = Hold.__table__  # type: ignore[attr-defined]
_accounts = Account.__table__  # type: ignore[attr-defined]

INTERRUPTED = "interrupted"
INSTANCE_LOST = "instance_lost"


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

        async def extend(session: AsyncSession) -> None:
            updated = await session.execute(sa.update(_leases).where(_leases.c.instance_id == self.instance_id)
                                            .values(expires_at=expires).returning(_leases.c.instance_id))
            if updated.first() is None:
                await session.execute(sa.insert(_leases).values(
                    instance_id=self.instance_id, host=socket.gethostname()[:255], pid=os.getpid(),
                    started_at=self._started, expires_at=expires))

        await write_transaction(self._sessions, extend)

    async def release(self) -> None:
        """Delete the lease (after a clean drain: this process holds nothing any more)."""
        async with self._sessions() as session:
            await session.execute(sa.delete(_leases).where(_leases.c.instance_id == self.instance_id))
            await session.commit()


async def settle_dead_owners(sessions: async_sessionmaker[AsyncSession], *, skip_owners: Collection[str] = (),
                             now: datetime | None = None) -> int:
    """Settle every hold whose owner's lease lapsed (or never existed) as `interrupted`, with no
    charge; return how many. Lapsed leases are then deleted. `skip_owners` are left alone (their
    journal is still to be replayed, which bills better). Safe to run from several processes at
    once (settling is idempotent by request id)."""
    now = now or utcnow()
    live = sa.select(_leases.c.instance_id).where(_leases.c.expires_at >= now)
    dead = [_holds.c.owner.is_not(None), _holds.c.owner.not_in(live)]
    lapsed = [_leases.c.expires_at < now]
    if skip_owners:
        dead.append(_holds.c.owner.not_in(list(skip_owners)))
        lapsed.append(_leases.c.instance_id.not_in(list(skip_owners)))
    async def settle(session: AsyncSession) -> list[Settlement]:
        rows = (await session.execute(
            sa.select(_holds.c.request_id, _holds.c.account_id, _holds.c.key_id, _holds.c.model_public_name,
                      _holds.c.endpoint, _holds.c.created_at, _accounts.c.user_id)
            .join(_accounts, _accounts.c.id == _holds.c.account_id).where(*dead))).all()
        items = [_interrupted(row, now) for row in rows]
        if items:
            await settle_batch(session, items)
        await session.execute(sa.delete(_leases).where(*lapsed))
        return items

    items = await write_transaction(sessions, settle)
    for item in items:
        log.warning("settled request %s of a lost instance as interrupted, without charge", item.request_id)
    return len(items)


def _interrupted(row: Any, now: datetime) -> Settlement:
    created: datetime = row.created_at
    if created.tzinfo is None:  # SQLite returns naive UTC
        created = created.replace(tzinfo=now.tzinfo)
    return Settlement(
        request_id=str(row.request_id), account_id=str(row.account_id), user_id=str(row.user_id),
        api_key_id=None if row.key_id is None else str(row.key_id), model_public_name=str(row.model_public_name or ""),
        ollama_tag="", node=None, endpoint=str(row.endpoint or ""), input_tokens=0, output_tokens=0,
        tokens_estimated=True, cost_pico=0, latency_ms=max(0, round((now - created).total_seconds() * 1000)),
        ttft_ms=None, status=INTERRUPTED, error_code=INSTANCE_LOST, registry_version="", created_at=now)
