"""This process's lease and journal, and the settlement of requests whose process died.

    open_journal()  this process's settlement journal in DATA_DIR/journal
    start()         replay the journals of dead processes (their settlements and what their streams
                    relayed), register the lease, then settle the holds of lapsed leases
    keep()          background task: renew the lease every ttl/4; every few s replay the journals of
                    local processes that died since (a killed worker) and settle dead owners
    stop()          flush the usage writer (a bounded wait), close the journal, drop the lease

Journal replay comes first: it bills what was delivered, while settling a dead owner's hold
charges nothing; both are idempotent by request id, so the first to commit wins. Dead owners are
therefore settled only once the replayed settlements are written, and never while their journal
file is still in DATA_DIR (another local process is replaying it).

The rules are in gateway/billing/leases.py and gateway/billing/journal.py; this module schedules them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.billing.journal import Journal, owner_of, replay
from gateway.billing.leases import settle_dead_owners
from gateway.context import AppContext
from gateway.idempotency import purge_expired
from gateway.settings import Settings

log = logging.getLogger("pr.billing")

SETTLE_INTERVAL = 5.0  # seconds between checks for dead owners (bounded by half the lease)
SHUTDOWN_FLUSH_SECONDS = 10.0  # then the journal keeps what the database did not take


def open_journal(settings: Settings, instance_id: str) -> Journal:
    """This process's journal file under DATA_DIR/journal (locked while the process lives)."""
    return Journal(settings.data_dir / "journal", instance_id)


async def settle_dead(ctx: AppContext) -> int:
    """Settle the holds of processes whose lease lapsed, except those whose journal is still in
    DATA_DIR (being replayed by another local process); returns how many (0 when the database fails)."""
    journal = ctx.usage_writer.journal
    skip = {owner_of(path) for path in journal.directory.glob("*.ndjson")} if journal is not None else set()
    try:
        settled = await settle_dead_owners(ctx.sessions, skip_owners=skip)
    except Exception:
        log.exception("settling the requests of lost instances failed; retrying later")
        return 0
    ctx.metrics.usage_events_written(settled)
    return settled


async def replay_dead_journals(ctx: AppContext, *, flush: bool) -> None:
    """Queue the unfinished settlements of dead processes' journals (re-journaled in ours, then their
    files deleted); with `flush`, write them now (only before the usage writer runs)."""
    writer, journal = ctx.usage_writer, ctx.usage_writer.journal
    if journal is None:
        return
    found = replay(journal.directory)
    for item in found.items:
        writer.submit(item)  # journaled again, in our file
    await journal.sync()
    found.release(delete=True)
    if not found.items:
        return
    log.warning("replaying %d settlements from the journals of stopped processes", len(found.items))
    journal.replayed.update(item.request_id for item in found.items)
    if flush:
        try:
            await writer.flush()
        except Exception as exc:
            log.error("the database refused the replayed settlements; they stay queued: %s", exc)


async def start(ctx: AppContext) -> None:
    """Replay dead journals, register this process's lease and settle what dead processes left.

    Runs before the usage writer starts (so the flush here is the only one)."""
    if ctx.usage_writer.journal is not None:
        ctx.usage_writer.journal.start()
    await replay_dead_journals(ctx, flush=True)
    try:
        await ctx.lease.renew()
    except Exception:
        log.exception("registering the instance lease failed; retrying in the background")
    if not _replay_pending(ctx):
        await settle_dead(ctx)


def _replay_pending(ctx: AppContext) -> bool:
    """Whether replayed settlements still wait for the database (dead owners must wait for them)."""
    journal = ctx.usage_writer.journal
    if journal is None or not journal.replayed:
        return False
    if ctx.usage_writer.queued(journal.replayed):
        return True
    journal.replayed.clear()
    return False


async def keep(ctx: AppContext) -> None:
    """Renew the lease and settle dead owners until cancelled."""
    loop = asyncio.get_running_loop()
    settle_every = min(SETTLE_INTERVAL, ctx.lease.ttl.total_seconds() / 2)
    next_settle = loop.time() + settle_every
    while True:
        await asyncio.sleep(min(ctx.lease.renew_interval, settle_every))
        try:
            await ctx.lease.renew()
        except Exception as exc:
            log.error("renewing the instance lease failed: %s", exc)
        if loop.time() >= next_settle:
            try:  # a local process that died since we started (a worker) left a journal
                await replay_dead_journals(ctx, flush=False)
            except OSError as exc:
                log.error("replaying a settlement journal failed: %s", exc)
            if not _replay_pending(ctx):
                await settle_dead(ctx)
            with contextlib.suppress(Exception):  # retried next round
                await purge_expired(ctx.sessions)
            next_settle = loop.time() + settle_every


async def stop(ctx: AppContext) -> None:
    """Flush the usage writer for up to SHUTDOWN_FLUSH_SECONDS, close the journal, drop the lease.

    If the database does not take everything, the journal file stays for the next start and the
    lease is left to lapse. Never raises."""
    flushed = True
    try:
        await ctx.usage_writer.aclose(timeout=SHUTDOWN_FLUSH_SECONDS)
    except Exception as exc:
        flushed = False
        log.critical("shutdown: %d settlements are not in the database; the journal keeps them for the next "
                     "start: %s", ctx.usage_writer.depth, exc)
    journal = ctx.usage_writer.journal
    if journal is not None:
        try:
            await journal.aclose()
        except OSError as exc:
            log.critical("closing the settlement journal failed: %s", exc)
    if flushed:
        try:
            await ctx.lease.release()
        except Exception as exc:
            log.error("releasing the instance lease failed (it will expire): %s", exc)
