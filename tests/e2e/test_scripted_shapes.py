"""Upstream shapes replayed byte for byte: calls in separate lines, missing counts, lines cut anywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.scripted_ollama import Reply, ScriptedOllama, chat_line, done_line
from tests.support.stack import Stack, run_stack

TAG = "qwen3:latest"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def _calls_in_separate_lines(path: str, body: dict[str, Any]) -> Reply:
    lines = [chat_line(TAG, thinking="Two cities."),
             chat_line(TAG, tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
             chat_line(TAG, tool_calls=[{"id": "call_x", "function": {"name": "get_weather",
                                                                    "arguments": {"city": "Tōkyō"}}}]),
             done_line(TAG, prompt=None, evals=None)]  # counts missing
    data = Reply(lines).ndjson()
    # Every line cut in two, one cut inside the UTF-8 of "ō".
    cuts = [data.index("ō".encode()) + 1, *(i + 7 for i in range(len(data)) if data[i:i + 1] == b"\n")]
    return Reply(lines, splits=cuts)


@pytest.fixture
async def scripted(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    with run_stack(make_settings, database_url, tmp_path, node_apps=[ScriptedOllama(_calls_in_separate_lines)],
                   **production_env(database_url)) as running:
        yield running
        await running.engine.dispose()


@pytest.mark.parametrize("stream", [False, True])
async def test_calls_from_separate_lines_with_missing_counts(scripted: Stack, stream: bool) -> None:
    tenant = await scripted.tenant()
    ask: dict[str, Any] = {"model": "privaterouter/qwen-fast", "tools": [WEATHER],
                           "messages": [{"role": "user", "content": "Weather in Paris and Tokyo?"}]}
    async with openai.AsyncOpenAI(base_url=scripted.v1, api_key=tenant.api_key, max_retries=0) as client:
        if stream:
            chunks = [c async for c in await client.chat.completions.create(
                **ask, stream=True, stream_options={"include_usage": True})]
            calls = [(c.index, c.id, c.function.arguments if c.function else None)
                     for chunk in chunks if chunk.choices for c in chunk.choices[0].delta.tool_calls or ()]
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            usage = chunks[-1].usage
        else:
            answer = await client.chat.completions.create(**ask)
            calls = [(n, c.id, c.function.arguments) for n, c in enumerate(answer.choices[0].message.tool_calls or [])]  # type: ignore[union-attr]
            finish, usage = [answer.choices[0].finish_reason], answer.usage
    assert [(index, args) for index, _, args in calls] == [(0, '{"city":"Paris"}'), (1, '{"city":"Tōkyō"}')]
    assert calls[0][1] and calls[0][1].startswith("call_") and calls[1][1] == "call_x"
    assert finish == ["tool_calls"]
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0  # estimated
    [event] = await scripted.settled(tenant.account_id, 1)
    assert event.tokens_estimated and event.output_tokens == usage.completion_tokens
