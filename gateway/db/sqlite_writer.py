"""SQLite's hot-path writes: one connection, one thread, each transaction in one hop.

Why: SQLite has one write lock per database. Through aiosqlite every statement is a hop between
the event loop and a connection's thread, so a hold (UPDATE, INSERT, COMMIT) kept the lock across
two event-loop turns, while the other connections of the pool waited for it in SQLite's busy
handler, which polls by sleeping (up to 100 ms a time) and is unfair: at 16 concurrent chats a
hold's first UPDATE waited up to 4.6 s for the lock (bench/sqlite_stalls.py, instrumented), which
was the whole p99 of 2.2 s.

Here the hold and the settlement batch are whole transactions run as one job on one dedicated
thread: `BEGIN IMMEDIATE`, the statements, `COMMIT`, back to the loop once. Jobs queue in order
(first come, first served, no busy-waiting inside this process), the lock is held only for the
statements' own time, and the loop pays one thread hop per transaction. Other writers (web pages,
leases, key last-use, CLI commands, another process) still meet this one through SQLite's busy
timeout, rarely and briefly.

Jobs are the project's own async transaction code (`place_hold`, `settle_batch`) run over a
`ThreadSession`: the slice of AsyncSession they use, over a synchronous Session, whose coroutines
complete without ever suspending, so `run_coroutine` drives them to the end in the thread.

Checkpoints: the writer's connection does not checkpoint at commit (`wal_autocheckpoint=0`), so a
hold never waits for the WAL to be copied into the database and fsynced; a PASSIVE checkpoint runs
on its own thread and connection after every `checkpoint_every` transactions (it never blocks the
writer). Durability as before: WAL with synchronous=NORMAL (see gateway/db/engine.py).
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
    """A job awaited something that really suspends (I/O on the loop): it cannot run in the writer."""


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, synchronously. Raises SuspendedJob if it does."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise SuspendedJob("a writer job awaited real I/O")


class ThreadSession:
    """The part of AsyncSession's interface the billing transactions use, over a synchronous Session
    in the writer thread. Its coroutines never suspend."""

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
        self._checkpoint_running = threading.Event()
        self._since_checkpoint = 0  # write transactions since the last checkpoint started
        self.checkpoints = 0
        self.busy_retries = 0  # jobs that found another connection writing and waited

    def _start(self) -> Engine:
        engine = sa.create_engine(f"sqlite:///{self.path}", poolclass=StaticPool, hide_parameters=True,
                                  connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _writer_pragmas)
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                result = self._transaction(job)
                break
            except sa.exc.OperationalError as exc:
                if not _is_busy(exc) or loop.time() > deadline:
                    raise
            self.busy_retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        self._after_commit()
        if durable:
            await asyncio.to_thread(_fsync_wal, self.path)
        return result

    def _transaction(self, job: Job[T]) -> T:
        engine = self._engine or self._start()
        with Session(engine, expire_on_commit=False) as session:
            try:
                result = run_coroutine(job(cast(AsyncSession, ThreadSession(session))))
                session.commit()
            except BaseException:
                session.rollback()
                raise
        return result

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
        self._checkpointer, self._checkpoint_connection, self._engine = None, None, None


def _is_busy(error: sa.exc.OperationalError) -> bool:
    return "database is locked" in str(error.orig) or "database is busy" in str(error.orig)


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
