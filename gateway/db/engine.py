"""One async engine factory for PostgreSQL (asyncpg) and the embedded SQLite (aiosqlite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(url: str, *, pool_size: int = 20, connect_timeout: float | None = None,
                  statement_timeout: float | None = None, pool_timeout: float = 30.0) -> AsyncEngine:
    """Engine for `url`; SQLite gets WAL, foreign keys and a busy timeout on every connection.

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
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
