"""One async engine factory for PostgreSQL (asyncpg) and the embedded SQLite (aiosqlite)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from gateway.db.sqlite_writer import Job, SqliteWriter, T

# The writer of each file-backed SQLite engine (see sqlite_writer.py), keyed by its sync engine.
_writers: weakref.WeakKeyDictionary[Engine, SqliteWriter] = weakref.WeakKeyDictionary()


def create_engine(url: str, *, pool_size: int = 20, connect_timeout: float | None = None,
                  statement_timeout: float | None = None, pool_timeout: float = 30.0) -> AsyncEngine:
    """Engine for `url`; SQLite gets WAL, foreign keys and a busy timeout on every connection, and a
    file-backed SQLite database a `SqliteWriter` for the hot path's transactions (`sqlite_writer()`),
    closed when the engine is disposed.

    SQLite's durability: WAL with synchronous=NORMAL. A commit is not fsynced; the WAL is at each
    checkpoint and after each settlement batch (`SqliteWriter.run(durable=True)`, before the journal
    marks the batch done). A process crash loses nothing (the WAL is in the OS's cache); an OS crash or
    power loss can lose the commits since the last fsync (at most one batch interval, ~50 ms), never
    corrupt the database. Settlements are on disk in the journal before they are committed
    (gateway/billing/journal.py) and replay; what such a loss can still drop is a hold placed in that
    window. A replayed settlement of such a request finds no hold and no usage event, so it is
    settled then (gateway/billing/settlement.py): its event is written and its cost charged within
    the free balance, the rest recorded as `cost_capped_pico`. Only a request that had journaled
    nothing yet (admitted in that window and cut by the crash before it finished or streamed for
    PROGRESS_SECONDS) leaves no trace, and no charge.

    `hide_parameters`: failed statements are rendered without their bound values (see gateway/logs.py).
    PostgreSQL bounds (seconds; None = the driver's default, as migrations want): `connect_timeout` for
    a new connection, `statement_timeout` both server-side (`SET statement_timeout`) and client-side
    (asyncpg's `command_timeout`, which also fires when the server is frozen), `pool_timeout` to wait
    for a free pooled connection. A connection that breaks is invalidated by SQLAlchemy, and a
    disconnect invalidates the whole pool, so stale connections after a server restart are replaced.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A fixed pool (the same 15 connections at most as the default 5 + 10 overflow), as for PostgreSQL:
        # overflow connections were opened and closed on every burst of key-cache misses (152 in 17 s at
        # c=16), each a new thread and four pragmas.
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True,
                                     **({"pool_size": 15, "max_overflow": 0} if path and path != ":memory:" else {}))
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if path and path != ":memory:" and not path.startswith("file:"):
            writer = SqliteWriter(path)
            _writers[engine.sync_engine] = writer
            event.listen(engine.sync_engine, "engine_disposed", lambda _engine: writer.close())
        return engine
    # A fixed pool: overflow connections would be opened and closed on every burst (each one a TCP and
    # TLS-negotiation round trip); requests beyond the pool wait a moment for a connection instead.
    connect_args: dict[str, Any] = {}
    if connect_timeout is not None:
        connect_args["timeout"] = connect_timeout
    if statement_timeout is not None:
        connect_args["command_timeout"] = statement_timeout
        connect_args["server_settings"] = {"statement_timeout": str(int(statement_timeout * 1000))}
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout,
                               pool_pre_ping=False, connect_args=connect_args,
                               hide_parameters=True)  # bound values (emails, hashes) never reach a log


def sqlite_writer(engine: AsyncEngine | None) -> SqliteWriter | None:
    """The hot-path writer of a file-backed SQLite engine; None for PostgreSQL and in-memory SQLite."""
    return None if engine is None else _writers.get(engine.sync_engine)


def bound_engine(sessions: Callable[[], AsyncSession]) -> AsyncEngine | None:
    """The engine a session factory is bound to; None for anything else (tests may pass a plain callable)."""
    bind = getattr(sessions, "kw", {}).get("bind")
    return bind if isinstance(bind, AsyncEngine) else None


def postgres_engine(sessions: Callable[[], AsyncSession]) -> AsyncEngine | None:
    """The PostgreSQL engine a session factory is bound to; None for SQLite or anything else."""
    engine = bound_engine(sessions)
    return engine if engine is not None and engine.dialect.name == "postgresql" else None


def sessions_writer(sessions: Callable[[], AsyncSession]) -> SqliteWriter | None:
    """The writer of the engine a session factory is bound to (see `sqlite_writer`)."""
    return sqlite_writer(bound_engine(sessions))


async def write_transaction(sessions: async_sessionmaker[AsyncSession], job: Job[T], *, durable: bool = False) -> T:
    """Run `job(session)` as one write transaction and commit it: on file-backed SQLite through the
    engine's SqliteWriter (never waiting in SQLite's busy handler, never holding the write lock across
    event-loop turns), elsewhere in a session of `sessions`. `durable` (SQLite): see SqliteWriter.run.
    Raises what the job or the database raises, after rolling back."""
    writer = sessions_writer(sessions)
    if writer is not None:
        return await writer.run(job, durable=durable)
    async with sessions() as session:
        result = await job(session)
        await session.commit()
        return result


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
