"""Non-streaming answers: assembled from Ollama's stream, and cancelled when the client leaves.

Failing input 7 (an abandoned call billed in full, three times) and issue 13's long answer that
outlived the first-byte timeout, against a scripted Ollama over real sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.timed_ollama import Reply, ScriptedOllama, model_entry, run_scripted_stack

MODEL = "privaterouter/test-scripted"
MODELS = model_entry(MODEL, input_price="1.000000", output_price="2.000000")


def slow_answer(pieces: int, delay: float) -> Callable[[dict[str, Any]], Reply]:
    return lambda body: Reply(prompt_eval_count=20, pieces=[f" w{index}" for index in range(pieces)], delay=delay)


async def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_an_answer_slower_than_the_first_byte_timeout_completes(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(slow_answer(pieces=20, delay=0.1))  # 2 s of generation, first-byte timeout 0.5 s
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=MODELS,
                            UPSTREAM_FIRST_BYTE_TIMEOUT="0.5", UPSTREAM_IDLE_TIMEOUT="1",
                            **production_env(database_url)) as stack:
        tenant = await stack.tenant()
        async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                     headers={"Authorization": f"Bearer {tenant.api_key}"}) as client:
            response = await client.post("/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "think long"}]})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["choices"][0]["message"]["content"] == "".join(f" w{index}" for index in range(20))
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["usage"] == {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40}
        [event] = await stack.settled(tenant.account_id, 1)
        assert event.status == "success" and not event.tokens_estimated
        assert event.cost_pico == 20 * 10**6 + 20 * 2 * 10**6
        assert fake.requests[0]["stream"] is True  # asked for a stream, answered the client in one piece
        await stack.engine.dispose()


async def test_an_sdk_call_that_times_out_is_cancelled_on_every_attempt(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(slow_answer(pieces=30, delay=0.1))  # 3 s of generation, the client waits 1.5 s
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=MODELS,
                            **production_env(database_url)) as stack:
        tenant = await stack.tenant()
        client = openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, timeout=1.5)  # max_retries=2
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        await client.close()
        attempts = 3
        await _wait_for(lambda: fake.cancelled == attempts)
        events = await stack.settled(tenant.account_id, attempts)
        assert len(events) == attempts and fake.finished == 0
        for event in events:
            # Charged for what Ollama had generated when the client left: about 1.5 s of a 3 s answer.
            assert (event.status, event.error_code) == ("cancelled", "client_disconnected")
            assert event.tokens_estimated and 0 < event.output_tokens < 30
        assert sum(event.output_tokens for event in events) <= fake.pieces_sent
        account = await stack.account(tenant.account_id)
        assert account.held_pico == 0 and account.balance_pico == await stack.ledger_sum(tenant.account_id)
        await stack.engine.dispose()
