"""The SQLite writer: one transaction per job, other writers waited for (never busy-waiting in SQLite)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.db import sqlite_writer as module
from gateway.db.engine import create_engine, session_factory, sessions_writer, sqlite_writer, write_transaction
from gateway.db.models import InstanceLease, utcnow
from gateway.db.sqlite_writer import SqliteWriter, SuspendedJob

_leases = InstanceLease.__table__  # type: ignore[attr-defined]


@pytest.fixture
async def engine(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[AsyncEngine]:
    path = tmp_path / "writer.db"
    shutil.copyfile(sqlite_template, path)
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    yield engine
    await engine.dispose()


def _lease(name: str) -> sa.Insert:
    now = utcnow()
    return sa.insert(_leases).values(instance_id=name, host="h", pid=1, started_at=now, expires_at=now)


async def _names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.execute(sa.select(_leases.c.instance_id).order_by(_leases.c.instance_id)))
                    .scalars())


def _writer(engine: AsyncEngine) -> SqliteWriter:
    writer = sqlite_writer(engine)
    assert writer is not None
    return writer


async def test_only_file_databases_have_a_writer(engine: AsyncEngine) -> None:
    assert sessions_writer(session_factory(engine)) is _writer(engine)
    memory = create_engine("sqlite+aiosqlite://")
    assert sqlite_writer(memory) is None
    await memory.dispose()


async def test_a_job_commits_and_returns_its_result(engine: AsyncEngine) -> None:
    async def job(session: AsyncSession) -> str:
        await session.execute(_lease("a"))
        return "done"

    assert await _writer(engine).run(job) == "done"
    assert await _names(engine) == ["a"]


async def test_a_failing_job_writes_nothing(engine: AsyncEngine) -> None:
    async def job(session: AsyncSession) -> None:
        await session.execute(_lease("a"))
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await _writer(engine).run(job)
    assert await _names(engine) == []


async def test_plain_sql_rolls_back_on_error(engine: AsyncEngine) -> None:
    def statements(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO instance_leases (instance_id, host, pid, started_at, expires_at)"
                           " VALUES ('a', 'h', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
        raise ValueError("refused")

    with pytest.raises(ValueError):
        await _writer(engine).run_sql(statements)
    assert await _names(engine) == []
    assert await _writer(engine).run_sql(lambda connection: connection.execute("SELECT 1").fetchone()) == (1,)


async def test_a_job_that_really_awaits_is_refused(engine: AsyncEngine) -> None:
    async def job(session: AsyncSession) -> None:
        await session.execute(_lease("a"))
        await asyncio.sleep(0)  # real suspension: cannot run inside one synchronous transaction

    with pytest.raises(SuspendedJob):
        await _writer(engine).run(job)
    assert await _names(engine) == []


async def test_another_writer_is_waited_for_with_the_loop_free(engine: AsyncEngine, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "writer.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    other.execute("INSERT INTO instance_leases (instance_id, host, pid, started_at, expires_at)"
                  " VALUES ('first', 'h', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")

    async def job(session: AsyncSession) -> None:
        await session.execute(_lease("second"))

    writer = _writer(engine)
    task = asyncio.create_task(writer.run(job))
    await asyncio.sleep(0.05)  # the loop keeps running while the writer waits
    assert not task.done() and writer.busy_retries > 0
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(task, 5)
    assert await _names(engine) == ["first", "second"]


async def test_waiting_is_bounded(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "bounded.db"
    shutil.copyfile(sqlite_template, path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer = SqliteWriter(str(path), busy_timeout=0.05)
    try:
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            await writer.run(lambda session: session.execute(_lease("x")))
    finally:
        other.execute("ROLLBACK")
        other.close()
        writer.close()


async def test_durable_commits_fsync_the_wal(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    monkeypatch.setattr(module, "_fsync_wal", synced.append)
    writer = _writer(engine)
    await writer.run(lambda session: session.execute(_lease("a")))
    assert synced == []
    await writer.run(lambda session: session.execute(_lease("b")), durable=True)
    assert synced == [writer.path]


def test_fsync_wal_tolerates_a_checkpointed_away_wal(tmp_path: Path) -> None:
    module._fsync_wal(str(tmp_path / "absent.db"))  # no -wal file: nothing to sync, no error
    (tmp_path / "present.db-wal").write_bytes(b"frames")
    module._fsync_wal(str(tmp_path / "present.db"))


async def test_checkpoints_run_off_the_loop_every_n_transactions(tmp_path: Path, sqlite_template: Path) -> None:
    path = tmp_path / "checkpoints.db"
    shutil.copyfile(sqlite_template, path)
    writer = SqliteWriter(str(path), checkpoint_every=3)
    try:
        for name in ("a", "b", "c"):
            await writer.run(lambda session, name=name: session.execute(_lease(name)))  # type: ignore[misc]
        for _ in range(100):
            if writer.checkpoints:
                break
            await asyncio.sleep(0.01)
        assert writer.checkpoints == 1
    finally:
        writer.close()


async def test_write_transaction_uses_the_writer_on_sqlite(engine: AsyncEngine,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    writer = _writer(engine)
    calls: list[bool] = []
    original = writer.run

    async def counting(job, *, durable=False):  # type: ignore[no-untyped-def]
        calls.append(durable)
        return await original(job, durable=durable)

    monkeypatch.setattr(writer, "run", counting)
    await write_transaction(session_factory(engine), lambda session: session.execute(_lease("a")))
    assert calls == [False] and await _names(engine) == ["a"]


async def test_a_closed_writer_reopens_on_the_next_job(engine: AsyncEngine) -> None:
    writer = _writer(engine)
    await writer.run_sql(lambda connection: connection.execute("SELECT 1").fetchone())
    writer.close()  # what the engine's dispose does
    assert await writer.run_sql(lambda connection: connection.execute("SELECT 2").fetchone()) == (2,)
    await writer.run(lambda session: session.execute(_lease("a")))
    assert await _names(engine) == ["a"]
