"""SQLite's hot-path writes: one connection, each transaction run to its end in one go.

Why: SQLite has one write lock per database. Through aiosqlite every statement is a hop between
the event loop and a connection's thread, so a hold (UPDATE, INSERT, COMMIT) kept the lock across
two event-loop turns, while the other connections of the pool waited for it in SQLite's busy
handler, which polls by sleeping (up to 100 ms a time) and is unfair: at 16 concurrent chats a
hold's first UPDATE waited up to 4.6 s for the lock (bench/sqlite_stalls.py, instrumented), which
was the whole p99 of 2.2 s.

Here the hold and the settlement batch are whole transactions (`BEGIN IMMEDIATE`, the statements,
`COMMIT`) run synchronously on the event loop's thread: a hold's statements take a few hundred
microseconds of CPU, less than the thread hops alone cost, and the lock is held only for that. A
dedicated writer thread was measured first: every statement gives up the GIL and waits up to the
switch interval (5 ms) to get it back from the busy loop, so a hold job took 3.7 ms and jobs queued
for 35 ms. SQLite never waits here (busy_timeout=0): when another connection (web pages, leases,
key last-use, a CLI command, another process) holds the lock, `run` waits with the loop free and
retries, up to 30 s, as the busy timeout did.

Jobs are the project's own async transaction code (`place_hold`, `settle_batch`) run over an
`InlineSession`: the slice of AsyncSession they use, over a synchronous Session, whose coroutines
complete without ever suspending, so `run_coroutine` drives them to the end at once.

Checkpoints: this connection does not checkpoint at commit (`wal_autocheckpoint=0`), so no hold
waits for the WAL to be copied into the database and fsynced; a PASSIVE checkpoint runs on its own
thread and connection every `checkpoint_every` transactions (it never blocks writers). Durability:
WAL with synchronous=NORMAL (see gateway/db/engine.py); `run(durable=True)` fsyncs the WAL after the
commit, off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

log = logging.getLogger("pr.db")
T = TypeVar("T")
CHECKPOINT_EVERY = 200  # write transactions between checkpoints (a hold writes ~5 WAL pages: a few MiB of WAL)


class SuspendedJob(RuntimeError):
    """A job awaited something that really suspends (I/O on the loop): it cannot run synchronously."""


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, synchronously. Raises SuspendedJob if it does."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise SuspendedJob("a SQLite writer job awaited real I/O")


class InlineSession:
    """The part of AsyncSession's interface the billing transactions use, over a synchronous Session.
    Its coroutines never suspend."""

    def __init__(self, session: Session) -> None:
        self.sync_session = session

    async def execute(self, statement: Any, params: Any = None) -> Any:
        return self.sync_session.execute(statement, params)

    def add(self, instance: object) -> None:
        self.sync_session.add(instance)

    async def commit(self) -> None:
        self.sync_session.commit()

    async def rollback(self) -> None:
        self.sync_session.rollback()


Job = Callable[[AsyncSession], Coroutine[Any, Any, T]]


class SqliteWriter:
    """Runs write transactions on one connection, each to its end in one go. Use it from one event
    loop; `close()` (also run when the engine is disposed) closes its connections."""

    def __init__(self, path: str, *, checkpoint_every: int = CHECKPOINT_EVERY, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._checkpoint_every = checkpoint_every
        self._busy_timeout = busy_timeout
        self._engine: Engine | None = None
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpoint_connection: sqlite3.Connection | None = None  # used on the checkpoint thread only
        self._dbapi: sqlite3.Connection | None = None  # the engine's one connection (StaticPool)
        self._checkpoint_running = threading.Event()
        self._since_checkpoint = 0  # write transactions since the last checkpoint started
        self.checkpoints = 0
        self.busy_retries = 0  # jobs that found another connection writing and waited

    def _start(self) -> Engine:
        engine = sa.create_engine(f"sqlite:///{self.path}", poolclass=StaticPool, hide_parameters=True,
                                  connect_args={"check_same_thread": False})
        event.listen(engine, "connect", self._on_connect)
        event.listen(engine, "begin", _begin_immediate)
        self._engine = engine
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-checkpoint")
        return engine

    async def run(self, job: Job[T], *, durable: bool = False) -> T:
        """Run `job(session)` as one transaction; commit unless the job did (or raised: then roll back
        and re-raise). Returns the job's result.

        While another connection holds the write lock the job waits here, the loop free, and retries
        (up to `busy_timeout` seconds, then SQLite's OperationalError). `durable`: once committed, the
        WAL is fsynced (in a thread), so this commit and every earlier one survive an OS crash or a
        power loss, not only a process crash."""
        result = await self._retrying(lambda: self._transaction(job))
        if durable:
            await asyncio.to_thread(_fsync_wal, self.path)
        return result

    async def run_sql(self, statements: Callable[[sqlite3.Connection], T]) -> T:
        """Run `statements(connection)` on the DB-API connection between BEGIN IMMEDIATE and COMMIT
        (ROLLBACK if it raises), waiting for other writers as `run` does. For the hottest transaction,
        the hold, where SQLAlchemy's session and statement layers cost more than SQLite itself."""
        return await self._retrying(lambda: self._sql_transaction(statements))

    async def _retrying(self, transaction: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                result = transaction()
                break
            except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
                if not _is_busy(exc) or loop.time() > deadline:
                    raise
            self.busy_retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        self._after_commit()
        return result

    def _transaction(self, job: Job[T]) -> T:
        engine = self._engine or self._start()
        with Session(engine, expire_on_commit=False) as session:
            try:
                result = run_coroutine(job(cast(AsyncSession, InlineSession(session))))
                session.commit()
            except BaseException:
                session.rollback()
                raise
        return result

    def _sql_transaction(self, statements: Callable[[sqlite3.Connection], T]) -> T:
        if self._dbapi is None:
            (self._engine or self._start()).connect().close()  # the one connection of the StaticPool
        connection = self._dbapi
        assert connection is not None
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = statements(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        _writer_pragmas(dbapi_connection, record)
        self._dbapi = dbapi_connection

    def _after_commit(self) -> None:
        """Start a checkpoint on its thread every `checkpoint_every` transactions."""
        self._since_checkpoint += 1
        if self._since_checkpoint < self._checkpoint_every or self._checkpoint_running.is_set():
            return
        self._since_checkpoint = 0
        self._checkpoint_running.set()
        assert self._checkpointer is not None
        self._checkpointer.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._checkpoint_connection is None:
                self._checkpoint_connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                                             check_same_thread=False)
                self._checkpoint_connection.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpoint_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except Exception as exc:  # the next one retries; SQLite also checkpoints when the last connection closes
            log.warning("SQLite checkpoint failed: %s", exc)
        finally:
            self._checkpoint_running.clear()

    def close(self) -> None:
        """Wait for a running checkpoint, then close the connections."""
        if self._checkpointer is not None:
            self._checkpointer.shutdown(wait=True)
        if self._checkpoint_connection is not None:
            self._checkpoint_connection.close()
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.dispose()
        self._checkpointer, self._checkpoint_connection, self._engine, self._dbapi = None, None, None, None


def _is_busy(error: Exception) -> bool:
    """SQLITE_BUSY: another connection holds the lock (busy_timeout=0 reports it at once)."""
    message = str(getattr(error, "orig", None) or error)
    return "database is locked" in message or "database is busy" in message


def _fsync_wal(path: str) -> None:
    """Make every commit so far durable: fsync the WAL (any descriptor will do: fsync is per file). No
    WAL file means it was checkpointed and removed, and the checkpoint synced the database file."""
    with contextlib.suppress(FileNotFoundError):
        fd = os.open(path + "-wal", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver's implicit BEGIN off: `_begin_immediate` begins
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=0")  # never wait inside SQLite: it would block the loop (run() waits)
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on the checkpoint thread
    cursor.close()


def _begin_immediate(connection: sa.Connection) -> None:
    # Take the write lock at BEGIN: a transaction that reads first and writes later could otherwise
    # fail to upgrade (SQLITE_BUSY_SNAPSHOT) when another process committed in between.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
