"""Failing inputs 1-4 of the outside testing, replayed against a scripted Ollama node.

Each test states the exact upstream lines (cut at chosen byte offsets), checks what the gateway
sent upstream, and what a real client (the `openai` SDK, LangChain) gets back.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from gateway.settings import Settings
from providers.ollama.fake.replies import sample
from tests.e2e.conftest import production_env
from tests.support.scripted_ollama import Reply, ScriptedOllama, chat_line, done_line
from tests.support.stack import Stack, run_stack

GEMMA = "gemma4:latest"
QUESTION = [{"role": "user", "content": "What is the capital of Australia?"}]


def _gemma_script(path: str, body: dict[str, Any]) -> Reply:
    """Failing input 1: thinks 50 tokens unless told `think: false`."""
    if path == "/api/embed":
        return _embed_script(path, body)
    if body.get("think") is False:
        return Reply([chat_line(GEMMA, content="Canberra."), done_line(GEMMA, 20, 3)], splits=[7, 61, 100])
    thinking = [chat_line(GEMMA, thinking=f" t{i}") for i in range(50)]
    return Reply([*thinking, done_line(GEMMA, 20, 50, reason="length")], splits=[5, 300, 301])


def _embed_script(path: str, body: dict[str, Any]) -> Reply:
    if any(len(text.split()) > 2048 for text in body["input"]):
        return Reply(status=400, body=b'{"error":"the input length exceeds the context length"}')
    return Reply([{"model": body["model"], "embeddings": [[0.6, 0.8]] * len(body["input"]),
                   "prompt_eval_count": sum(len(t.split()) for t in body["input"])}])


@pytest.fixture
async def scripted(make_settings: Callable[..., Settings], database_url: str,
                   tmp_path: Path) -> AsyncIterator[tuple[Stack, ScriptedOllama]]:
    node = ScriptedOllama(_gemma_script)
    with run_stack(make_settings, database_url, tmp_path, node_apps=[node],
                   **production_env(database_url)) as running:
        yield running, node
        await running.engine.dispose()


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.v1, api_key=key, max_retries=0, timeout=20)


# --- 1. reasoning_effort reaches `think` ---------------------------------------------------------

async def test_reasoning_effort_none_turns_gemma_thinking_off(scripted: tuple[Stack, ScriptedOllama]) -> None:
    stack, node = scripted
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        answer = await client.chat.completions.create(model="privaterouter/fast", messages=QUESTION,  # type: ignore[arg-type]
                                                      max_tokens=50, reasoning_effort="none")  # type: ignore[arg-type]
    assert node.bodies("/api/chat")[-1]["think"] is False
    assert answer.choices[0].message.content == "Canberra."
    assert answer.usage is not None and answer.usage.completion_tokens == 3
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.output_tokens == 3


@pytest.mark.parametrize("spelling", [{"reasoning_effort": "low"}, {"extra_body": {"reasoning": {"effort": "low"}}}])
async def test_a_reasoning_level_on_gemma_thinks_and_returns_both_reasoning_names(
        scripted: tuple[Stack, ScriptedOllama], spelling: dict[str, Any]) -> None:
    stack, node = scripted
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        answer = await client.chat.completions.create(model="privaterouter/fast", messages=QUESTION,  # type: ignore[arg-type]
                                                      max_tokens=50, **spelling)
        chunks = [chunk async for chunk in await client.chat.completions.create(
            model="privaterouter/fast", messages=QUESTION, max_tokens=50, stream=True, **spelling)]  # type: ignore[arg-type]
    assert [body["think"] for body in node.bodies("/api/chat")] == [True, True]
    thought = "".join(f" t{i}" for i in range(50))
    extra = answer.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == extra["reasoning"] == thought
    assert answer.choices[0].finish_reason == "length"
    deltas = [c.choices[0].delta.model_extra or {} for c in chunks if c.choices]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == thought
    assert "".join(d.get("reasoning", "") for d in deltas) == thought


async def test_responses_api_reasoning_effort_none_turns_thinking_off(scripted: tuple[Stack, ScriptedOllama]) -> None:
    stack, node = scripted
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        response = await client.responses.create(model="privaterouter/fast", input="What is the capital of Australia?",
                                                 reasoning={"effort": "none"}, max_output_tokens=50)
    assert node.bodies("/api/chat")[-1]["think"] is False
    assert response.output_text == "Canberra."


# --- 2 and 3. forced tool calls, parallel_tool_calls -------------------------------------------

GET_TIME = {"type": "function", "function": {"name": "get_time", "description": "The time now."}}
GET_WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def _structured_script(path: str, body: dict[str, Any]) -> Reply:
    """Like Ollama: with `format` the output conforms to it; without it the model just talks."""
    tag = body["model"]
    text = json.dumps(sample(body["format"])) if isinstance(body.get("format"), dict) else "OK."
    # Cut inside the JSON text and inside the done line.
    return Reply([chat_line(tag, content=text[:2]), chat_line(tag, content=text[2:]), done_line(tag)],
                 splits=[3, 90, 140, 141])


def _two_calls_script(path: str, body: dict[str, Any]) -> Reply:
    tag = body["model"]
    calls = [{"function": {"name": "get_weather", "arguments": {"city": city}}} for city in ("Paris", "Tokyo")]
    return Reply([chat_line(tag, tool_calls=calls), done_line(tag)], splits=[40])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
@pytest.mark.parametrize("stream", [False, True])
async def test_forced_tool_choice_returns_a_real_tool_call(scripted: tuple[Stack, ScriptedOllama], choice: Any,
                                                           stream: bool) -> None:
    stack, node = scripted
    node.script = _structured_script
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        if stream:
            chunks = [c async for c in await client.chat.completions.create(
                model="privaterouter/qwen-fast", messages=QUESTION, tools=[GET_TIME], tool_choice=choice,  # type: ignore[arg-type]
                stream=True)]
            calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert [call.function.name for call in calls if call.function] == ["get_time"]
            assert calls[0].id and calls[0].index == 0 and calls[0].function and calls[0].function.arguments == "{}"
        else:
            answer = await client.chat.completions.create(
                model="privaterouter/qwen-fast", messages=QUESTION, tools=[GET_TIME], tool_choice=choice)  # type: ignore[arg-type]
            message = answer.choices[0].message
            assert message.tool_calls and [c.function.name for c in message.tool_calls] == ["get_time"]  # type: ignore[union-attr]
            assert message.tool_calls[0].function.arguments == "{}"  # type: ignore[union-attr]
            finish, content = [answer.choices[0].finish_reason], message.content or ""
    assert finish == ["tool_calls"] and content == ""
    assert node.bodies("/api/chat")[-1]["format"] == {"type": "object", "properties": {}}


async def test_required_with_several_tools_lets_the_model_pick_one(scripted: tuple[Stack, ScriptedOllama]) -> None:
    stack, node = scripted
    node.script = _structured_script
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        answer = await client.chat.completions.create(
            model="privaterouter/qwen-fast", messages=QUESTION, tools=[GET_TIME, GET_WEATHER],  # type: ignore[list-item]
            tool_choice="required")
    sent = node.bodies("/api/chat")[-1]["format"]
    assert [option["properties"]["name"]["const"] for option in sent["anyOf"]] == ["get_time", "get_weather"]
    [call] = answer.choices[0].message.tool_calls or []
    assert call.function.name == "get_time" and answer.choices[0].finish_reason == "tool_calls"  # type: ignore[union-attr]


class Capital(BaseModel):
    city: str
    country: str


async def test_langchain_structured_output_by_function_calling(scripted: tuple[Stack, ScriptedOllama]) -> None:
    stack, node = scripted
    node.script = _structured_script
    tenant = await stack.tenant()
    llm = ChatOpenAI(base_url=stack.v1, api_key=tenant.api_key, model="privaterouter/qwen-fast",  # type: ignore[arg-type]
                     max_retries=0, timeout=20)
    result = await llm.with_structured_output(Capital, method="function_calling").ainvoke("Capital of Australia?")
    assert result == Capital(city="x", country="x")
    assert node.bodies("/api/chat")[-1]["format"]["required"] == ["city", "country"]


@pytest.mark.parametrize("stream", [False, True])
async def test_parallel_tool_calls_false_returns_one_call(scripted: tuple[Stack, ScriptedOllama],
                                                         stream: bool) -> None:
    stack, node = scripted
    node.script = _two_calls_script
    tenant = await stack.tenant()
    ask: dict[str, Any] = {"model": "privaterouter/qwen-fast", "messages": QUESTION, "tools": [GET_WEATHER],
                           "parallel_tool_calls": False}
    async with _client(stack, tenant.api_key) as client:
        if stream:
            chunks = [c async for c in await client.chat.completions.create(**ask, stream=True)]
            calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
            assert [(c.index, c.function.arguments) for c in calls if c.function] == [(0, '{"city":"Paris"}')]
        else:
            answer = await client.chat.completions.create(**ask)
            calls = answer.choices[0].message.tool_calls or []  # type: ignore[assignment]
            assert [c.function.arguments for c in calls] == ['{"city":"Paris"}']  # type: ignore[union-attr]
        both = await client.chat.completions.create(**{**ask, "parallel_tool_calls": True})
    assert len(both.choices[0].message.tool_calls or []) == 2


# --- 4. embeddings over the real context ---------------------------------------------------------

async def test_overlong_embedding_input_is_refused_not_truncated(scripted: tuple[Stack, ScriptedOllama]) -> None:
    stack, node = scripted
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="privaterouter/embed", input=" ".join(["word"] * 3000))
        fine = await client.embeddings.create(model="privaterouter/embed", input="Vectors are nice")
    assert refused.value.code == "context_length_exceeded" and refused.value.status_code == 400
    assert fine.usage.prompt_tokens == 3
    # The short input went upstream with truncate: false; the long one never left (the node's context is 2048).
    assert [body["truncate"] for body in node.bodies("/api/embed")] == [False]


async def test_ollamas_own_context_refusal_is_context_length_exceeded(scripted: tuple[Stack, ScriptedOllama]) -> None:
    stack, node = scripted
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        # Under our estimate (short words), over the node's count: Ollama itself refuses (truncate: false).
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="privaterouter/embed", input=" ".join(["x"] * 2100))
    assert refused.value.code == "context_length_exceeded"
    assert "gemma" not in str(refused.value.body) and "nomic" not in str(refused.value.body)
    assert node.bodies("/api/embed")[-1]["truncate"] is False
