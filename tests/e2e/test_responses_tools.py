"""The Responses API beyond text: function tools, tool results, images, reasoning items; SDKs and an agent."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.support.stack import Stack

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PNG_URL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAW"
           "jR9awAAAABJRU5ErkJggg==")


def _client(stack: Stack, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=stack.v1, api_key=key, max_retries=0, timeout=20)


async def test_a_function_call_round_trip_with_responses_create(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        first = await client.responses.create(model="privaterouter/qwen-fast", input="What is the weather in Paris?",
                                              tools=[WEATHER], reasoning={"effort": "low"})  # type: ignore[list-item]
        calls = [item for item in first.output if item.type == "function_call"]
        assert [c.name for c in calls] == ["get_weather"] and json.loads(calls[0].arguments) == {"city": "x"}
        assert first.output[0].type == "reasoning" and first.status == "completed"
        # Second turn: the whole conversation back, including the reasoning item and the tool's result.
        follow: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"},
                             *[item.model_dump(exclude_none=True) for item in first.output],
                             {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}]
        second = await client.responses.create(model="privaterouter/qwen-fast", input=follow, tools=[WEATHER])  # type: ignore[list-item]
    assert second.output_text and not [i for i in second.output if i.type == "function_call"]
    sent = stack.fake.stats.bodies("/api/chat")[-1]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool"]
    assert sent["messages"][1]["tool_calls"][0]["function"] == {"index": 0, "name": "get_weather",
                                                                "arguments": {"city": "x"}}
    assert sent["messages"][1]["thinking"] and sent["messages"][2]["tool_name"] == "get_weather"
    await stack.settled(tenant.account_id, 2)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "name": "get_weather"}])
async def test_forced_tool_choice_and_streaming_events(stack: Stack, choice: Any) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        async with client.responses.stream(model="privaterouter/fast", input="Say hi.", tools=[WEATHER],  # type: ignore[list-item]
                                           tool_choice=choice, reasoning={"effort": "none"}) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "x"}
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    assert kinds[-1] == "response.completed"
    assert stack.fake.stats.bodies("/api/chat")[-1]["format"] == WEATHER["parameters"]


async def test_input_image_reaches_the_node(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        response = await client.responses.create(model="privaterouter/fast", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": PNG_URL}]}])
    assert response.output_text
    assert stack.fake.stats.bodies("/api/chat")[-1]["messages"][0]["images"] == [PNG_URL.split(",", 1)[1]]


async def test_an_openai_agents_sdk_agent_calls_a_tool_and_answers(stack: Stack) -> None:
    tenant = await stack.tenant()
    seen: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        seen.append(city)
        return f"sunny in {city}"

    set_tracing_disabled(True)
    async with _client(stack, tenant.api_key) as client:
        agent = Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                      model=OpenAIResponsesModel(model="privaterouter/qwen-fast", openai_client=client))
        result = await Runner.run(agent, "What is the weather in Tokyo?")
    assert seen == ["x"] and isinstance(result.final_output, str) and result.final_output
    await stack.settled(tenant.account_id, 2)
