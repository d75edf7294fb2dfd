"""Failing input 9: the database is down when the gateway stops; the next start bills every answer.

A private PostgreSQL cluster (never the shared one) is stopped while answers are being delivered,
the gateway is stopped (its flush gives up after a bounded wait), the database comes back and the
gateway starts again: the journal is replayed and every delivered answer is billed once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from gateway.billing.money import to_pico
from gateway.db.engine import create_engine, session_factory
from gateway.db.models import Account, CreditTransaction, Hold, UsageEvent
from gateway.tenants import create_tenant
from tests.support.gateway_process import SECRET, GatewayProcess
from tests.support.private_services import PrivatePostgres
from tests.support.private_services import private_postgres as private_cluster
from tests.support.servers import serve_app
from tests.support.stack import registry_text
from tests.support.timed_ollama import Reply, ScriptedOllama, model_entry

MODEL = "privaterouter/test-scripted"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    with private_cluster() as cluster:  # our own cluster: this test stops it
        yield cluster


def two_seconds(body: dict[str, Any]) -> Reply:
    return Reply(prompt_eval_count=9, pieces=[f" p{index}" for index in range(20)], delay=0.1)


async def _ask(client: httpx.AsyncClient, stream: bool, started: asyncio.Event) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "go"}], "stream": stream}
    if not stream:
        task = asyncio.ensure_future(client.post("/chat/completions", json=body))
        await asyncio.sleep(0.5)  # admitted (its hold placed) well before the database stops
        started.set()
        response = await task
        assert response.status_code == 200, response.text
        return dict(response.json()["usage"])
    body["stream_options"] = {"include_usage": True}
    usage: dict[str, Any] = {}
    async with client.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            started.set()
            if line.startswith("data: {") and '"usage":{' in line:
                usage = orjson.loads(line[6:])["usage"]
    return usage


async def test_answers_delivered_while_the_database_is_down_are_billed_by_the_next_start(
        private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    fake = ScriptedOllama(two_seconds)
    with serve_app(fake.app()) as upstream:
        models = tmp_path / "models.yaml"
        models.write_text(registry_text([upstream], extra=model_entry(MODEL, input_price="1.000000",
                                                                      output_price="2.000000")))
        env = {"DATABASE_URL": private_postgres.url, "MODELS_FILE": str(models), "INSTANCE_LEASE_SECONDS": "3"}
        gateway = GatewayProcess(tmp_path, env).start()  # migrates the private cluster
        engine = create_engine(private_postgres.url)
        async with session_factory(engine)() as session:
            tenant = await create_tenant(session, secret=SECRET, plan="developer", credits_pico=to_pico("1"))
        await engine.dispose()
        try:
            async with httpx.AsyncClient(base_url=f"{gateway.url}/v1", timeout=30,
                                         headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
                started = [asyncio.Event() for _ in range(6)]
                asks = [asyncio.ensure_future(_ask(client, index % 2 == 0, started[index])) for index in range(6)]
                for event in started:
                    await event.wait()
                private_postgres.stop()  # every request is admitted; none has finished
                usages = await asyncio.gather(*asks)
            # A clean stop (uvicorn re-raises SIGTERM once done): the flush gives up, the journal keeps it.
            assert gateway.stop(timeout=40) in (0, -signal.SIGTERM)
        finally:
            gateway.kill()
        assert "the journal keeps them for the next start" in gateway.log.read_text()

        private_postgres.start()
        restarted = GatewayProcess(tmp_path, env).start()
        try:
            engine = create_engine(private_postgres.url)
            async with session_factory(engine)() as session:
                events = list((await session.execute(sa.select(UsageEvent))).scalars())
                holds = (await session.execute(sa.select(sa.func.count()).select_from(Hold))).scalar_one()
                account = await session.get(Account, tenant.account_id)
                ledger = (await session.execute(sa.select(sa.func.sum(CreditTransaction.amount_pico)))).scalar_one()
            await engine.dispose()
        finally:
            restarted.stop()
    assert holds == 0 and len(events) == 6 and {event.status for event in events} == {"success"}
    expected = sum(usage["prompt_tokens"] * 10**6 + usage["completion_tokens"] * 2 * 10**6 for usage in usages)
    assert sum(event.cost_pico for event in events) == expected > 0  # every delivered answer, billed once
    assert account is not None and account.held_pico == 0
    assert account.balance_pico == to_pico("1") - expected == int(ledger)
