"""One async engine factory for PostgreSQL (asyncpg) and the embedded SQLite (aiosqlite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def create_engine(url: str, *, pool_size: int = 20) -> AsyncEngine:
    """Engine for `url`; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    `hide_parameters`: failed statements are rendered without their bound values (see gateway/logs.py).
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
    return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_pre_ping=False,
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
