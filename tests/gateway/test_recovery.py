"""Crash recovery with real processes: `serve` killed with streams in flight.

Failing input 8 (PostgreSQL): after `kill -9` of the process group (or SIGTERM then SIGKILL, a
container stop timeout), the holds stayed open for two hours with no usage event. Now the restarted
process replays the dead one's journal (billing what its streams had relayed), and any process
settles what is left as `interrupted` once the dead process's lease lapses.

Power loss on embedded SQLite: the holds committed in the last ~50 ms (not yet fsynced) are lost
while the journal kept the settlements; the restart bills those requests anyway (once each).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.billing.journal import PROGRESS_SECONDS
from gateway.billing.money import to_pico
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, CreditTransaction, Hold, UsageEvent
from gateway.tenants import Tenant, create_tenant
from tests.support.gateway_process import SECRET, GatewayProcess
from tests.support.servers import serve_app
from tests.support.stack import registry_text
from tests.support.timed_ollama import Reply, ScriptedOllama, model_entry

MODEL = "privaterouter/test-scripted"
STREAMS = 6
LEASE = "3"  # seconds: short, so the test does not wait the default 20 s


def slow_stream(body: dict[str, Any]) -> Reply:
    return Reply(prompt_eval_count=12, pieces=[f" t{index}" for index in range(400)], delay=0.05)  # 20 s


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[ScriptedOllama, Path]]:
    fake = ScriptedOllama(slow_stream)
    with serve_app(fake.app()) as url:
        models = tmp_path / "models.yaml"
        models.write_text(registry_text([url], extra=model_entry(MODEL, input_price="1.000000",
                                                                 output_price="2.000000")))
        yield fake, models


@contextlib.asynccontextmanager
async def engine_for(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _tenant(engine: AsyncEngine, credits_usd: str) -> Tenant:
    async with session_factory(engine)() as session:
        return await create_tenant(session, secret=SECRET, plan="developer", credits_pico=to_pico(credits_usd))


async def _open_streams(stack: AsyncExitStack, base: str, api_key: str,
                        n: int) -> list[AsyncIterator[str]]:
    """`n` streams, each read up to its first content frame (so every one is admitted and relaying).
    The line iterators are returned so that none is collected (which would close its connection)."""
    client = await stack.enter_async_context(httpx.AsyncClient(
        base_url=f"{base}/v1", timeout=30, headers={"Authorization": f"Bearer {api_key}"},
        limits=httpx.Limits(max_connections=n)))

    async def one() -> AsyncIterator[str]:
        response = await stack.enter_async_context(client.stream("POST", "/chat/completions", json={
            "model": MODEL, "stream": True, "max_tokens": 1000, "messages": [{"role": "user", "content": "go"}]}))
        assert response.status_code == 200
        lines = response.aiter_lines()
        while not (await anext(lines)).startswith("data: "):
            pass
        return lines

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _counts(engine: AsyncEngine, account_id: str) -> tuple[int, int]:
    async with session_factory(engine)() as session:
        holds = (await session.execute(sa.select(sa.func.count()).select_from(Hold)
                                       .where(Hold.account_id == account_id))).scalar_one()
        events = (await session.execute(sa.select(sa.func.count()).select_from(UsageEvent)
                                        .where(UsageEvent.account_id == account_id))).scalar_one()
        return int(holds), int(events)


async def _wait_settled(engine: AsyncEngine, account_id: str, events: int, within: float = 60) -> float:
    started = time.monotonic()
    while True:
        holds, written = await _counts(engine, account_id)
        if holds == 0 and written >= events:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{holds} holds open, {written} events after {within} s"
        await asyncio.sleep(0.2)


async def _assert_books(engine: AsyncEngine, tenant: Tenant, credits_pico: int, admitted: int) -> list[UsageEvent]:
    async with session_factory(engine)() as session:
        events = list((await session.execute(sa.select(UsageEvent).where(UsageEvent.account_id == tenant.account_id)
                                             )).scalars())
        account = await session.get(Account, tenant.account_id)
        ledger = (await session.execute(sa.select(sa.func.coalesce(sa.func.sum(CreditTransaction.amount_pico), 0))
                                        .where(CreditTransaction.account_id == tenant.account_id))).scalar_one()
    assert len(events) == admitted and len({event.request_id for event in events}) == admitted
    assert account is not None and account.held_pico == 0 and account.balance_pico == int(ledger)
    assert account.balance_pico == credits_pico - sum(event.cost_pico for event in events)
    return events


@pytest.mark.parametrize("stop", ["sigkill", "sigterm-then-sigkill"])
async def test_a_killed_gateway_settles_its_streams_after_restart(
        postgres_url: str, tmp_path: Path, upstream: tuple[ScriptedOllama, Path], stop: str) -> None:
    fake, models = upstream
    env = {"DATABASE_URL": postgres_url, "MODELS_FILE": str(models), "INSTANCE_LEASE_SECONDS": LEASE}
    gateway = GatewayProcess(tmp_path, env).start()
    async with engine_for(postgres_url) as engine, AsyncExitStack() as streams:
        # Six streams hold $0.01208 of $0.0125: below the $0.001 floor, nothing else is admitted until they settle.
        tenant = await _tenant(engine, "0.0125")
        try:
            lines = await _open_streams(streams, gateway.url, tenant.api_key, STREAMS)
            if stop == "sigterm-then-sigkill":  # a container stop whose grace period is shorter than the drain
                gateway.signal_group(signal.SIGTERM)  # the streams keep going: uvicorn drains
            await asyncio.sleep(PROGRESS_SECONDS + 1)  # the streams journal what they relayed
            gateway.kill()
        finally:
            gateway.kill()
        assert len(lines) == STREAMS
        assert await _counts(engine, tenant.account_id) == (STREAMS, 0)  # what a crash used to leave for 2 hours
        restarted = GatewayProcess(tmp_path, env).start()
        try:
            await _wait_settled(engine, tenant.account_id, STREAMS, within=60)
            events = await _assert_books(engine, tenant, to_pico("0.0125"), STREAMS)
            assert {(event.status, event.error_code) for event in events} == {("interrupted", "instance_lost")}
            # Billed for what the journal saw relayed (the restart replayed it), never beyond what was sent.
            assert all(event.output_tokens > 0 and event.cost_pico > 0 for event in events)
            assert sum(event.output_tokens for event in events) <= fake.pieces_sent
            async with httpx.AsyncClient(base_url=f"{restarted.url}/v1", timeout=30,
                                         headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
                again = await client.post("/chat/completions", json={
                    "model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
            assert again.status_code == 200, again.text  # the free balance is back
        finally:
            restarted.stop()


async def test_one_of_two_workers_killed_is_settled_by_the_other(
        postgres_url: str, redis_url: str, tmp_path: Path, upstream: tuple[ScriptedOllama, Path]) -> None:
    fake, models = upstream
    # Several workers need Redis (one rate-limit budget for all of them; the server refuses otherwise).
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "MODELS_FILE": str(models),
           "INSTANCE_LEASE_SECONDS": LEASE, "WORKERS": "2"}
    gateway = GatewayProcess(tmp_path, env).start()
    try:
        async with engine_for(postgres_url) as engine, AsyncExitStack() as streams:
            tenant = await _tenant(engine, "1")
            lines = await _open_streams(streams, gateway.url, tenant.api_key, STREAMS)
            async with session_factory(engine)() as session:
                owners = list((await session.execute(sa.select(Hold.owner))).scalars())
            # The worker serving the first stream dies (the kernel may give both workers streams, or one all).
            victim = int(str(owners[0]).rsplit("-", 2)[1])  # instance id: <host>-<pid>-<random>
            assert victim in gateway.workers()
            lost = sum(1 for owner in owners if owner == owners[0])
            os.kill(victim, signal.SIGKILL)
            # The survivor's clients leave (its streams settle `cancelled` at once); the victim's streams
            # are settled by the survivor (or uvicorn's replacement worker) once the victim's lease lapses.
            await streams.aclose()
            del lines
            await _wait_settled(engine, tenant.account_id, STREAMS, within=60)
            events = await _assert_books(engine, tenant, to_pico("1"), STREAMS)
            interrupted = [event for event in events if event.status == "interrupted"]
            assert lost >= 1 and len(interrupted) == lost
            assert all(event.status == "cancelled" for event in events if event.status != "interrupted")
    finally:
        gateway.stop()


def _journaled(data_dir: Path) -> set[str]:
    """The request ids the settlement journals under `data_dir` hold as not yet in the database."""
    ids, done = set(), set()
    for path in (data_dir / "journal").glob("*.ndjson"):
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            if record["t"] == "d":
                done.update(record["ids"])
            else:
                ids.add(record["request_id"])
    return ids - done


async def test_holds_lost_with_sqlites_last_writes_are_billed_from_the_journal(
        tmp_path: Path, upstream: tuple[ScriptedOllama, Path]) -> None:
    """Power loss on SQLite: the database comes back as it was before the streams were admitted (their
    holds were in the unsynced WAL tail), the journal still has what they relayed; the restart bills
    each of them once, within the balance, and the ledger sums to the balance."""
    fake, models = upstream
    database = tmp_path / "gateway.db"
    url = f"sqlite+aiosqlite:///{database}"
    env = {"DATABASE_URL": url, "MODELS_FILE": str(models), "INSTANCE_LEASE_SECONDS": LEASE}
    gateway = GatewayProcess(tmp_path, env).start()  # migrates the database
    async with engine_for(url) as engine, AsyncExitStack() as streams:
        tenant = await _tenant(engine, "0.0125")
        before = tmp_path / "before-the-holds.db"
        with contextlib.closing(sqlite3.connect(database)) as source, \
                contextlib.closing(sqlite3.connect(before)) as copy:
            source.backup(copy)  # the last durable state: the tenant, no holds yet
        try:
            lines = await _open_streams(streams, gateway.url, tenant.api_key, STREAMS)
            assert await _counts(engine, tenant.account_id) == (STREAMS, 0)
            await asyncio.sleep(PROGRESS_SECONDS + 1)  # the streams journal what they relayed
        finally:
            gateway.kill()
        await engine.dispose()
        for suffix in ("-wal", "-shm"):  # the WAL tail is what the power loss takes
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(before, database)
        assert len(lines) == STREAMS
        journaled = _journaled(tmp_path / "data")
        assert len(journaled) == STREAMS
        assert await _counts(engine, tenant.account_id) == (0, 0)  # what a power loss used to leave: no bill
        restarted = GatewayProcess(tmp_path, env).start()
        try:
            await _wait_settled(engine, tenant.account_id, STREAMS, within=60)
            events = await _assert_books(engine, tenant, to_pico("0.0125"), STREAMS)
            assert {event.request_id for event in events} == journaled
            assert all(event.output_tokens > 0 and event.cost_pico > 0 for event in events)
            restarted.stop()
            again = GatewayProcess(tmp_path, env).start()  # a second restart replays nothing new
            again.stop()
            await _assert_books(engine, tenant, to_pico("0.0125"), STREAMS)
        finally:
            restarted.stop()
