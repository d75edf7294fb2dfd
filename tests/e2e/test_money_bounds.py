"""A request never costs more than its hold, whatever the prompt hides (failing inputs 5 and 6).

A scripted Ollama reports the counts real models do: a hidden template/SYSTEM prompt of 3,000
tokens, one token per character of a `"x x x ..."` prompt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.db.engine import session_factory
from gateway.db.models import ApiKey
from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.stack import Stack
from tests.support.timed_ollama import Reply, ScriptedOllama, model_entry, run_scripted_stack

MODEL = "privaterouter/test-scripted"
PRICED_10_PER_M = model_entry(MODEL, input_price="10.000000", output_price="10.000000")
PRICED_CHEAP = model_entry(MODEL, input_price="0.100000", output_price="0.300000")


def hidden_system_prompt(body: dict[str, Any]) -> Reply:
    """A Modelfile SYSTEM prompt of ~3,000 tokens: "hi" counts 3,000."""
    return Reply(prompt_eval_count=3000, pieces=["Hello", "!"])


def one_token_per_character(body: dict[str, Any]) -> Reply:
    text = "".join(message["content"] for message in body["messages"])
    return Reply(prompt_eval_count=len(text.replace(" ", "")) + 4, pieces=["ok"])


async def _chat(stack: Stack, api_key: str, content: Any, **extra: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.v1, timeout=30,
                                 headers={"Authorization": f"Bearer {api_key}"}) as client:
        return await client.post("/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": content}], **extra})


async def test_a_hidden_system_prompt_never_takes_a_key_above_its_monthly_limit(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(hidden_system_prompt)
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=PRICED_10_PER_M,
                            **production_env(database_url)) as stack:
        tenant = await stack.tenant(credits_usd="10", key_limit_usd="0.01")
        first = await _chat(stack, tenant.api_key, "hi")
        assert first.status_code == 200, first.text
        [event] = await stack.settled(tenant.account_id, 1)
        # 3,002 tokens at $10/M cost $0.03002; the hold was the key's whole $0.01, and that is the charge.
        assert (event.input_tokens, event.output_tokens) == (3000, 2)
        assert event.cost_pico == 10**10 and event.cost_capped_pico == 3002 * 10**7 - 10**10
        async with session_factory(stack.engine)() as session:
            key = await session.get(ApiKey, tenant.key_id)
            assert key is not None and key.spend_pico == 10**10 and key.held_pico == 0
        account = await stack.account(tenant.account_id)
        assert account.balance_pico == 10 * 10**12 - 10**10 == await stack.ledger_sum(tenant.account_id)
        # The key's month is spent: the next request is refused up front.
        second = await _chat(stack, tenant.api_key, "hi")
        assert second.status_code == 402 and second.json()["error"]["code"] == "insufficient_credits"
        await stack.engine.dispose()


async def test_a_learned_template_overhead_is_held_by_the_next_request(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(hidden_system_prompt)
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=PRICED_10_PER_M,
                            **production_env(database_url)) as stack:
        tenant = await stack.tenant(credits_usd="10")
        for _ in range(2):
            assert (await _chat(stack, tenant.api_key, "hi", max_tokens=2)).status_code == 200
        events = await stack.settled(tenant.account_id, 2)
        # The first answer shows the model's 3,000-token template; the second hold covers it.
        assert events[0].cost_capped_pico > 0
        assert events[1].cost_capped_pico == 0 and events[1].cost_pico == 3002 * 10**7
        account = await stack.account(tenant.account_id)
        assert account.held_pico == 0 and account.balance_pico == await stack.ledger_sum(tenant.account_id)
        await stack.engine.dispose()


async def test_a_prompt_above_a_bytes_over_three_estimate_is_held_in_full(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(one_token_per_character)
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=PRICED_CHEAP,
                            **production_env(database_url)) as stack:
        prompt = "x " * 12000  # 12,004 tokens for Ollama; bytes/3 said 8,008
        poor = await stack.tenant(credits_usd="0.00105")
        refused = await _chat(stack, poor.api_key, prompt, max_tokens=1)
        assert refused.status_code == 402, refused.text  # the true bound does not fit: nothing is under-charged
        poor_account = await stack.account(poor.account_id)
        assert (poor_account.balance_pico, poor_account.held_pico) == (105 * 10**7, 0)

        rich = await stack.tenant(credits_usd="0.01")
        answered = await _chat(stack, rich.api_key, prompt, max_tokens=1)
        assert answered.status_code == 200, answered.text
        [event] = await stack.settled(rich.account_id, 1)
        list_price = 12004 * 10**5 + 1 * 3 * 10**5
        assert (event.input_tokens, event.cost_pico, event.cost_capped_pico) == (12004, list_price, 0)
        account = await stack.account(rich.account_id)
        assert account.balance_pico == 10**10 - list_price == await stack.ledger_sum(rich.account_id)
        await stack.engine.dispose()


def costly_images(body: dict[str, Any]) -> Reply:
    """A vision encoder that spends 2,000 tokens per image (above the 768 the bound starts from)."""
    images = sum(len(message.get("images") or ()) for message in body["messages"])
    return Reply(prompt_eval_count=20 + 2000 * images, pieces=["a cat"])


async def test_an_image_costs_at_most_its_hold_and_then_is_held_at_its_learned_cost(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(costly_images)
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=PRICED_10_PER_M,
                            **production_env(database_url)) as stack:
        tenant = await stack.tenant(credits_usd="10")
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        content = [{"type": "text", "text": "what is this?"}, image]
        for _ in range(2):
            assert (await _chat(stack, tenant.api_key, content, max_tokens=1)).status_code == 200
        first, second = await stack.settled(tenant.account_id, 2)
        assert first.input_tokens == second.input_tokens == 2020
        assert first.cost_capped_pico > 0  # 768 tokens per image were held: the rest was not charged
        assert second.cost_capped_pico == 0 and second.cost_pico == (2020 + 1) * 10**7  # learned: held in full
        account = await stack.account(tenant.account_id)
        assert account.held_pico == 0 and account.balance_pico == await stack.ledger_sum(tenant.account_id)
        assert account.balance_pico == 10 * 10**12 - first.cost_pico - second.cost_pico
        await stack.engine.dispose()


async def test_a_system_prompt_reported_by_api_show_is_held_from_the_first_request(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    fake = ScriptedOllama(hidden_system_prompt, show={"system": "Be terse. " * 300, "template": "{{ .Prompt }}"})
    with run_scripted_stack(make_settings, database_url, tmp_path, fake, models=PRICED_10_PER_M,
                            **production_env(database_url)) as stack:
        tenant = await stack.tenant(credits_usd="10")
        deadline = time.monotonic() + 10
        while "scripted:latest" not in fake.shows:  # the gateway asks in the background at start
            assert time.monotonic() < deadline, "the gateway never asked /api/show"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        assert (await _chat(stack, tenant.api_key, "hi", max_tokens=2)).status_code == 200
        [event] = await stack.settled(tenant.account_id, 1)
        assert event.cost_capped_pico == 0 and event.cost_pico == 3002 * 10**7  # the 3,000 bytes were held
        await stack.engine.dispose()
