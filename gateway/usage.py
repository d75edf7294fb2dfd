"""Usage events and settlement, written off the answer's critical path but never lost.

Requests hand a `Settlement` to `UsageWriter.submit()` (no I/O, never blocks). A background task
writes them in batches, one database transaction per batch (hold release, ledger row and usage
event of each request commit together). A failing database is retried with backoff and the items
stay queued; a clean shutdown (`aclose`) flushes everything. Until an item is written its hold
still covers it, so balances stay conservative in the meantime.

With a `Journal` (gateway/billing/journal.py), every item is journaled on submit, each batch waits
for the journal to be on disk before it goes to the database, and is marked done once committed:
what a crash or a database outage at shutdown leaves unwritten, the next start replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.billing.journal import Journal
from gateway.billing.settlement import Settlement, settle_batch
from gateway.billing.settlement_pg import settle_batch_pg
from gateway.db.engine import postgres_engine, sessions_writer

log = logging.getLogger("pr.usage")
ISOLATE_AFTER_FAILURES = 3


class UsageWriter:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, batch_size: int = 256,
                 interval: float = 0.05, max_backoff: float = 5.0,
                 on_written: Callable[[list[Settlement], list[int | None]], None] | None = None,
                 on_failure: Callable[[Exception], None] | None = None, journal: Journal | None = None) -> None:
        self._sessions = sessions
        self._postgres = postgres_engine(sessions)  # batches go straight to asyncpg there
        self._sqlite = sessions_writer(sessions)  # SQLite: batches go through its one writer connection
        self.journal = journal
        self._batch_size = batch_size
        self._interval = interval
        self._max_backoff = max_backoff
        self._on_written = on_written
        self._on_failure = on_failure
        self._queue: list[Settlement] = []
        self.rejected: list[Settlement] = []  # refused by a working database: logged at CRITICAL
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def queued(self, request_ids: set[str]) -> bool:
        """Whether any of these requests still waits to be written."""
        return any(item.request_id in request_ids for item in self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-writer")

    def submit(self, item: Settlement) -> None:
        if self.journal is not None:
            self.journal.append_settlement(item)
        self._queue.append(item)
        if len(self._queue) >= self._batch_size:
            self._wakeup.set()

    async def flush(self) -> None:
        """Write everything queued now (used by tests and shutdown); raises if the database fails."""
        while self._queue:
            await self._write_batch()

    async def _write_batch(self) -> None:
        batch = self._queue[: self._batch_size]
        if self.journal is not None:
            await self.journal.make_durable()  # on disk before the database: a failure after this is replayed
        charges = await self._settle(batch)
        del self._queue[: len(batch)]
        if self.journal is not None:
            self.journal.mark_done(item.request_id for item in batch)
        if self._on_written is not None:
            self._on_written(batch, charges)

    async def _settle(self, batch: list[Settlement]) -> list[int | None]:
        """Settle and commit one batch: asyncpg directly on PostgreSQL, a session elsewhere."""
        if self._postgres is not None:
            return await settle_batch_pg(self._postgres, batch)
        if self._sqlite is not None:
            # Durable commit: the journal marks the batch done next, so it must survive a power loss.
            return await self._sqlite.run(lambda session: settle_batch(session, batch), durable=True)
        async with self._sessions() as session:
            charges = await settle_batch(session, batch)
            await session.commit()
        return charges

    async def _isolate_failures(self) -> None:
        """After repeated batch failures, write the next batch item by item. If the database takes some
        items, the ones it refuses are bad data: logged in full at CRITICAL and set aside so they cannot
        block the queue forever. If it takes none, it is down: everything stays queued."""
        batch = self._queue[: self._batch_size]
        written: list[Settlement] = []
        refused: list[tuple[Settlement, Exception]] = []
        for item in batch:
            try:
                [charge] = await self._settle([item])
            except Exception as exc:
                refused.append((item, exc))
                continue
            written.append(item)
            if self._on_written is not None:
                self._on_written([item], [charge])
        if not written:
            return
        for item, error in refused:
            log.critical("usage event refused by the database, set aside: %r: %s", item, error)
            self.rejected.append(item)
        if self.journal is not None:  # written, or set aside for good: a replay would not do better
            self.journal.mark_done(item.request_id for item in batch)
        done = {id(item) for item in batch}
        self._queue = [item for item in self._queue if id(item) not in done]

    async def _run(self) -> None:
        backoff = self._interval
        failures = 0
        while not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=backoff)
            self._wakeup.clear()
            try:
                if failures >= ISOLATE_AFTER_FAILURES:
                    await self._isolate_failures()
                await self.flush()
                backoff, failures = self._interval, 0
            except Exception as exc:  # keep the items; retry with backoff
                failures += 1
                backoff = min(max(backoff * 2, 0.1), self._max_backoff)
                log.error("writing %d usage events failed, retrying in %.1fs: %s", len(self._queue), backoff, exc)
                if self._on_failure is not None:
                    self._on_failure(exc)

    async def aclose(self, timeout: float = 30.0) -> None:
        """Stop the background task and flush what is left (retrying until `timeout`)."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        deadline = asyncio.get_running_loop().time() + timeout
        while self._queue:
            try:
                await self.flush()
            except Exception as exc:
                if asyncio.get_running_loop().time() > deadline:
                    log.critical("shutdown: %d usage events could not be written: %s", len(self._queue), exc)
                    raise
                await asyncio.sleep(0.5)

