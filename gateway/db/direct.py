"""asyncpg connections kept out of SQLAlchemy's pool for the hot path's statements (PostgreSQL).

The hold (gateway/billing/holds.py) and the settlement batch (gateway/billing/settlement_pg.py) send
their statements straight to asyncpg. Checking a connection out of the engine and back in for each
(`engine.connect()`: two greenlet switches, pool events, a reset) cost about 0.2 ms of CPU on the
reference machine, more than the statement itself (bench/notes, micro-benchmarks). So a few
connections, checked out of the engine's own pool once, are kept here and handed out LIFO:

    async with direct_connection(engine) as raw:   # an asyncpg.Connection, outside any transaction
        await raw.fetchval(...)

At most KEEP connections stay idle here; a caller that finds none checks one out of the engine's pool
(so it waits, and fails, exactly as a SQLAlchemy user would) and keeps it afterwards if there is room.
A connection that failed, was cancelled mid-statement, or is left in a transaction is discarded
(terminated), never reused. One the server closed while it sat idle (a database restart, a killed
backend: asyncpg sees the close at once) is discarded at checkout, unused, whether it was kept here or
in the engine's pool: a restart costs reconnections, not a failed request per connection (SQLAlchemy's
own path fails one request, then invalidates its pool). `engine.dispose()` closes the idle ones (an
`engine_disposed` listener), so nothing outlives the engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from gateway.db.availability import is_database_unavailable

KEEP = 8  # idle connections kept per engine (the engine's pool is 20)


class DirectConnections:
    """The idle asyncpg connections of one engine, kept checked out of its pool."""

    def __init__(self, engine: AsyncEngine, keep: int | None = None) -> None:
        self._engine = engine
        self._keep = KEEP if keep is None else keep
        self._idle: list[PoolProxiedConnection] = []
        self._generation = 0  # bumped by dispose: connections of an older pool are not kept

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """An asyncpg connection for a few statements. Raises what the engine's checkout or asyncpg raise."""
        generation = self._generation
        fairy = await self._checkout()
        raw: Any = fairy.driver_connection
        try:
            yield raw
        except BaseException as exc:
            broken = (not isinstance(exc, Exception) or is_database_unavailable(exc) or raw.is_closed()
                      or raw.is_in_transaction())
            await self._give_back(fairy, generation, discard=broken, error=exc if isinstance(exc, Exception) else None)
            raise
        await self._give_back(fairy, generation, discard=raw.is_closed() or raw.is_in_transaction())

    async def _checkout(self) -> PoolProxiedConnection:
        """The most recently kept idle connection, else one from the engine's pool; any the server has
        closed are discarded on the way (each discarded pool connection reconnects at its next checkout,
        so this ends)."""
        while self._idle:
            fairy = self._idle.pop()
            if not _closed(fairy):
                return fairy
            await self._discard(fairy, None)
        while True:
            fairy = await self._engine.raw_connection()
            if not _closed(fairy):
                return fairy
            await self._discard(fairy, None)

    async def _discard(self, fairy: PoolProxiedConnection, error: Exception | None) -> None:
        await greenlet_spawn(fairy.invalidate, error)  # terminated, so the pool opens a fresh one in its place
        await greenlet_spawn(fairy.close)

    async def _give_back(self, fairy: PoolProxiedConnection, generation: int, *, discard: bool,
                         error: Exception | None = None) -> None:
        stale = generation != self._generation  # checked out of a pool disposed since: close it too
        if not discard and not stale and len(self._idle) < self._keep:
            self._idle.append(fairy)
            return
        if discard or stale:
            await self._discard(fairy, error)
        else:
            await greenlet_spawn(fairy.close)

    def dispose(self) -> None:
        """Close the idle connections (called inside `engine.dispose()`'s greenlet)."""
        self._generation += 1
        idle, self._idle = self._idle, []
        for fairy in idle:
            fairy.invalidate()  # closes the asyncpg connection; its pool is being disposed
            fairy.close()


def _closed(fairy: PoolProxiedConnection) -> bool:
    raw: Any = fairy.driver_connection
    return raw is None or bool(raw.is_closed())


_ATTRIBUTE = "_privaterouter_direct"  # the engine's DirectConnections, kept on the engine itself


def direct_connection(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
    """An asyncpg connection of `engine` (PostgreSQL only), from the kept ones when one is idle."""
    connections: DirectConnections | None = getattr(engine.sync_engine, _ATTRIBUTE, None)
    if connections is None:
        connections = DirectConnections(engine)
        setattr(engine.sync_engine, _ATTRIBUTE, connections)
        event.listen(engine.sync_engine, "engine_disposed", _dispose)
    return connections.connection()


def _dispose(engine: Engine) -> None:
    connections: DirectConnections | None = getattr(engine, _ATTRIBUTE, None)
    if connections is not None:
        connections.dispose()
