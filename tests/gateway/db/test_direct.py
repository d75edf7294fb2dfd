"""Kept asyncpg connections for the hot path: reused, never reused when broken, closed with the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db import direct
from gateway.db.direct import direct_connection
from gateway.db.engine import create_engine
from tests.support.private_services import private_postgres


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


async def test_a_connection_is_reused_and_closed_by_dispose(engine: AsyncEngine) -> None:
    async with direct_connection(engine) as first:
        assert await first.fetchval("SELECT 1") == 1
    async with direct_connection(engine) as second:
        assert second is first  # kept: no checkout from the engine's pool
    await engine.dispose()
    assert first.is_closed()
    async with direct_connection(engine) as third:  # the engine still works after dispose
        assert third is not first and await third.fetchval("SELECT 2") == 2


async def test_a_statement_error_keeps_a_healthy_connection(engine: AsyncEngine) -> None:
    async with direct_connection(engine) as first:
        pass
    with pytest.raises(Exception, match="division by zero"):
        async with direct_connection(engine) as raw:
            await raw.fetchval("SELECT 1 / 0")
    async with direct_connection(engine) as again:
        assert again is first


async def test_a_connection_left_in_a_transaction_or_broken_is_discarded(engine: AsyncEngine) -> None:
    async with direct_connection(engine) as first:
        await first.execute("BEGIN")  # a caller that forgot to finish its transaction
    async with direct_connection(engine) as second:
        assert second is not first and not second.is_in_transaction()
    with pytest.raises(asyncio.CancelledError):
        async with direct_connection(engine) as cancelled:
            raise asyncio.CancelledError  # cancelled mid-statement: its state is unknown
    async with direct_connection(engine) as third:
        assert third is not cancelled and third is not second


async def test_at_most_keep_connections_stay_idle(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "KEEP", 2)
    engine = create_engine(postgres_url)
    seen: list[Any] = []
    release = asyncio.Event()

    async def use() -> None:
        async with direct_connection(engine) as raw:
            seen.append(raw)
            await release.wait()

    tasks = [asyncio.create_task(use()) for _ in range(4)]
    while len(seen) < 4:
        await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks)
    assert len({id(raw) for raw in seen}) == 4
    assert sum(raw.is_closed() for raw in seen) == 0  # the two beyond KEEP went back to the engine's pool
    kept = getattr(engine.sync_engine, direct._ATTRIBUTE)._idle
    assert len(kept) == 2
    await engine.dispose()


async def test_connections_the_server_closed_while_idle_are_replaced_before_use() -> None:
    # A database restart closes every connection, kept here or in the engine's pool; each used to fail one
    # request (15 in a row with 8 kept and 7 pooled), where SQLAlchemy's own path fails one in all.
    with private_postgres() as server:
        engine = create_engine(server.url)
        try:
            release = asyncio.Event()

            async def use() -> None:
                async with direct_connection(engine) as raw:
                    await raw.fetchval("SELECT 1")
                    await release.wait()

            tasks = [asyncio.create_task(use()) for _ in range(direct.KEEP + 4)]  # KEEP kept, 4 back in the pool
            await asyncio.sleep(0.2)
            release.set()
            await asyncio.gather(*tasks)
            await asyncio.to_thread(server.restart)
            for _ in range(direct.KEEP + 6):
                async with direct_connection(engine) as raw:
                    assert await raw.fetchval("SELECT 1") == 1
        finally:
            await engine.dispose()
