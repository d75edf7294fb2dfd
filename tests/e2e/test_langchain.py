"""LangChain's ChatOpenAI against the gateway: invoke, stream, tools and structured output."""

from __future__ import annotations

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.support.stack import Stack


def _chat(stack: Stack, key: str, model: str = "privaterouter/qwen-fast") -> ChatOpenAI:
    return ChatOpenAI(base_url=stack.v1, api_key=key, model=model, max_retries=0, timeout=20)  # type: ignore[arg-type]


async def test_invoke_and_stream(stack: Stack) -> None:
    tenant = await stack.tenant()
    llm = _chat(stack, tenant.api_key, "privaterouter/fast")
    answer = await llm.ainvoke("Say hi in five words.")
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    pieces = [chunk.content async for chunk in llm.astream("Write one haiku about TCP.")]
    assert len([piece for piece in pieces if piece]) > 1
    await stack.settled(tenant.account_id, 2)


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"sunny in {city}"


async def test_bind_tools_returns_a_tool_call(stack: Stack) -> None:
    tenant = await stack.tenant()
    llm = _chat(stack, tenant.api_key).bind_tools([get_weather])
    answer = await llm.ainvoke("What is the weather in Tokyo?")
    [call] = answer.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and isinstance(call["args"], dict) and call["id"]
    await stack.settled(tenant.account_id, 1)


class Weather(BaseModel):
    city: str
    temperature: int


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_with_structured_output(stack: Stack, method: str) -> None:
    tenant = await stack.tenant()
    llm = _chat(stack, tenant.api_key).with_structured_output(Weather, method=method)  # type: ignore[arg-type]
    result = await llm.ainvoke("What is the weather in Tokyo?")
    assert isinstance(result, Weather)
    await stack.settled(tenant.account_id, 1)


async def test_structured_output_by_function_calling_streams_the_object(stack: Stack) -> None:
    # A question without "weather": the emulator would answer in text unless the call is forced.
    tenant = await stack.tenant()
    llm = _chat(stack, tenant.api_key, "privaterouter/fast").with_structured_output(Weather, method="function_calling")
    parts = [part async for part in llm.astream("Tell me about Tokyo.")]
    assert parts and isinstance(parts[-1], Weather)
    assert stack.fake.stats.bodies("/api/chat")[-1]["format"]["required"] == ["city", "temperature"]


async def test_responses_api_mode_calls_a_tool(stack: Stack) -> None:
    tenant = await stack.tenant()
    llm = ChatOpenAI(base_url=stack.v1, api_key=tenant.api_key, model="privaterouter/qwen-fast",  # type: ignore[arg-type]
                     max_retries=0, timeout=20, use_responses_api=True)
    answer = await llm.bind_tools([get_weather]).ainvoke("What is the weather in Tokyo?")
    [call] = answer.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and call["args"] == {"city": "x"} and call["id"]
