"""`Idempotency-Key`: a retried /v1 POST is answered once and charged once (real SDK, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.stack import Stack
from tests.support.timed_ollama import Reply, ScriptedOllama, model_entry, run_scripted_stack

MODEL = "privaterouter/test-scripted"
MODELS = model_entry(MODEL, input_price="1.000000", output_price="2.000000")
MESSAGES = [{"role": "user", "content": "hi"}]


def two_and_a_half_seconds(body: dict[str, Any]) -> Reply:
    return Reply(prompt_eval_count=9, pieces=[f" w{index}" for index in range(25)], delay=0.1)


async def _until(condition: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def scripted(make_settings: Callable[..., Settings], database_url: str,
                   tmp_path: Path) -> AsyncIterator[tuple[ScriptedOllama, Stack]]:
    fake = ScriptedOllama(two_and_a_half_seconds)
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=MODELS,
                            **production_env(database_url)) as stack:
        yield fake, stack
        await stack.engine.dispose()


async def test_a_timed_out_call_retried_with_its_key_gets_the_answer_charged_once(
        scripted: tuple[ScriptedOllama, Stack]) -> None:
    fake, stack = scripted
    tenant = await stack.tenant()
    key = {"Idempotency-Key": "order-42"}
    impatient = openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, timeout=1.0, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        await impatient.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=key)
    await impatient.close()
    # The client left, but the key says it comes back: the generation runs to its end.
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.status == "success" and event.output_tokens == 25 and fake.cancelled == 0
    patient = openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, timeout=30)
    raw = await patient.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES,
                                                                   extra_headers=key)
    await patient.close()
    answer = raw.parse()
    assert raw.headers["idempotent-replayed"] == "true"
    assert answer.choices[0].message.content == "".join(f" w{index}" for index in range(25))
    await asyncio.sleep(0.3)  # a second event would be written within ~50 ms
    assert len(await stack.events(tenant.account_id)) == 1 and len(fake.requests) == 1
    account = await stack.account(tenant.account_id)
    assert account.balance_pico == 10 * 10**12 - event.cost_pico == await stack.ledger_sum(tenant.account_id)


async def test_the_sdk_retrying_with_a_key_is_charged_once(scripted: tuple[ScriptedOllama, Stack]) -> None:
    fake, stack = scripted
    tenant = await stack.tenant()
    client = openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, timeout=1.5)  # max_retries=2
    # Attempt 1 times out; the retries meet 409 (still running) or the replayed answer.
    with contextlib.suppress(openai.APITimeoutError, openai.ConflictError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES,
                                             extra_headers={"Idempotency-Key": "retry-me"})
    await client.close()
    [event] = await stack.settled(tenant.account_id, 1)
    await asyncio.sleep(0.3)
    assert len(await stack.events(tenant.account_id)) == 1 and len(fake.requests) == 1
    assert event.status == "success" and fake.cancelled == 0


async def test_a_running_key_is_409_another_body_422_and_a_bad_key_400(
        scripted: tuple[ScriptedOllama, Stack]) -> None:
    fake, stack = scripted
    tenant = await stack.tenant()
    auth = {"Authorization": f"Bearer {tenant.api_key}"}
    body = {"model": MODEL, "messages": MESSAGES}
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30, headers=auth) as client:
        first = asyncio.ensure_future(client.post("/chat/completions", json=body, headers={"Idempotency-Key": "k1"}))
        await _until(lambda: len(fake.requests) == 1)
        running = await client.post("/chat/completions", json=body, headers={"Idempotency-Key": "k1"})
        assert running.status_code == 409 and running.headers["retry-after"] == "1"
        assert running.json()["error"]["code"] == "idempotency_request_in_progress"
        other = await client.post("/chat/completions", json={**body, "max_tokens": 3},
                                  headers={"Idempotency-Key": "k1"})
        assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
        bad = await client.post("/chat/completions", json=body, headers={"Idempotency-Key": "x" * 256})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_idempotency_key"
        assert (await first).status_code == 200
        streamed = {**body, "stream": True}
        spent = await client.post("/chat/completions", json=streamed, headers={"Idempotency-Key": "s"})
        assert spent.status_code == 200
        again = await client.post("/chat/completions", json=streamed, headers={"Idempotency-Key": "s"})
        assert again.status_code == 422 and "streamed" in again.json()["error"]["message"]
    await stack.settled(tenant.account_id, 2)
    assert len(fake.requests) == 2  # neither a 409, a 422 nor a 400 reached Ollama


async def test_a_request_without_an_answer_frees_its_key(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(two_and_a_half_seconds)
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=MODELS,
                            **production_env(database_url)) as stack:
        poor = await stack.tenant(credits_usd="0")
        body = {"model": MODEL, "messages": MESSAGES}
        async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                     headers={"Authorization": f"Bearer {poor.api_key}"}) as client:
            refused = await client.post("/chat/completions", json=body, headers={"Idempotency-Key": "k"})
            assert refused.status_code == 402
            await stack.grant(poor.account_id, 10**12)
            retried = await client.post("/chat/completions", json=body, headers={"Idempotency-Key": "k"})
            assert retried.status_code == 200, retried.text  # the refused attempt did not spend the key
        await stack.engine.dispose()
