"""The real `openai` SDK against a real gateway in front of the Ollama emulator."""

from __future__ import annotations

import asyncio
import base64
import struct

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from gateway.billing.money import cost, format_usd
from tests.support.stack import Stack


def _client(stack: Stack, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=stack.v1, api_key=key, max_retries=0, timeout=20)


async def test_chat_completion_is_charged_exactly_the_listed_price(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="1.00", plan="free")
    async with _client(stack, tenant.api_key) as client:
        response = await client.chat.completions.create(
            model="privaterouter/fast", messages=[{"role": "user", "content": "Say hi in five words."}])
    assert response.model == "privaterouter/fast"
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    [event] = await stack.settled(tenant.account_id, 1)
    expected = cost(usage.prompt_tokens, usage.completion_tokens, 100_000, 300_000)  # $0.10 / $0.30 per million
    assert (event.status, event.cost_pico, event.tokens_estimated) == ("success", expected, False)
    assert (event.input_tokens, event.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    account = await stack.account(tenant.account_id)
    assert account.balance_pico == 10**12 - expected and account.held_pico == 0
    assert await stack.ledger_sum(tenant.account_id) == account.balance_pico
    assert format_usd(expected).startswith("0.00000")


async def test_sync_client_streaming_with_usage(stack: Stack) -> None:
    tenant = await stack.tenant()

    def consume() -> list[openai.types.chat.ChatCompletionChunk]:
        with OpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0, timeout=20) as client:
            stream = client.chat.completions.create(
                model="privaterouter/qwen-fast", messages=[{"role": "user", "content": "Write one haiku about TCP."}],
                stream=True, stream_options={"include_usage": True})
            return list(stream)

    chunks = await asyncio.to_thread(consume)  # the sync client, off the test's event loop
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    assert text and reasoning  # qwen3 thinks first; its thinking arrives as reasoning_content
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert len({c.id for c in chunks}) == 1
    await stack.settled(tenant.account_id, 1)


async def test_stream_without_include_usage_has_no_usage_chunk(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        stream = await client.chat.completions.create(
            model="privaterouter/fast", messages=[{"role": "user", "content": "hi"}], stream=True)
        chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.status == "success" and event.output_tokens > 0  # metered even though not shown


async def test_embeddings_float_and_base64(stack: Stack) -> None:
    tenant = await stack.tenant(plan="free")
    async with _client(stack, tenant.api_key) as client:
        single = await client.embeddings.create(model="privaterouter/embed", input="Vectors are nice")
        batch = await client.embeddings.create(model="privaterouter/embed", input=["a", "b"],
                                               encoding_format="base64")
    assert len(single.data[0].embedding) == 768
    assert [item.index for item in batch.data] == [0, 1]
    raw = batch.data[0].embedding
    if isinstance(raw, str):  # the SDK may hand base64 back as-is
        assert len(struct.unpack(f"<{len(base64.b64decode(raw)) // 4}f", base64.b64decode(raw))) == 768
    await stack.settled(tenant.account_id, 2)


async def test_models_list_is_filtered_by_plan_and_key(stack: Stack) -> None:
    free = await stack.tenant(plan="free")
    narrowed = await stack.tenant(plan="developer", allowed_models=["privaterouter/qwen-pro"])
    async with _client(stack, free.api_key) as client:
        ids = [model.id async for model in client.models.list()]
        assert ids == ["privaterouter/fast", "privaterouter/embed"]
        model = await client.models.retrieve("privaterouter/fast")
        assert model.id == "privaterouter/fast"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("privaterouter/qwen-pro")
    async with _client(stack, narrowed.api_key) as client:
        assert [model.id async for model in client.models.list()] == ["privaterouter/qwen-pro"]


async def test_legacy_completions_and_responses(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        completion = await client.completions.create(model="privaterouter/fast", prompt="Once upon", max_tokens=5)
        assert completion.choices[0].text and completion.model == "privaterouter/fast"
        response = await client.responses.create(model="privaterouter/fast", input="Say hi",
                                                 instructions="Be brief.")
        assert response.output_text and response.usage is not None and response.usage.output_tokens > 0
        stream = await client.responses.create(model="privaterouter/fast", input="Say hi", stream=True)
        kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    await stack.settled(tenant.account_id, 3)


@pytest.mark.parametrize(("kwargs", "error", "code"), [
    ({"api_key": "sk-pr-live-unknownunknownunknownunknown00"}, openai.AuthenticationError, "invalid_api_key"),
    ({"api_key": "eyJhbGciOiJIUzI1NiJ9.e30.sig"}, openai.AuthenticationError, "invalid_api_key"),
    ({"model": "privaterouter/nope"}, openai.NotFoundError, "model_not_found"),
    ({"model": "privaterouter/qwen-pro"}, openai.PermissionDeniedError, "model_not_allowed"),
    ({"model": "privaterouter/embed"}, openai.BadRequestError, "model_not_supported"),
    ({"n": 2}, openai.BadRequestError, None),
])
async def test_errors_raise_the_sdk_exception(stack: Stack, kwargs: dict[str, object],
                                              error: type[openai.APIStatusError], code: str | None) -> None:
    tenant = await stack.tenant(plan="free")
    kwargs = dict(kwargs)  # parametrized values are shared between runs
    api_key = str(kwargs.pop("api_key", tenant.api_key))
    request: dict[str, object] = {"model": "privaterouter/fast", "messages": [{"role": "user", "content": "hi"}]}
    request.update(kwargs)
    async with _client(stack, api_key) as client:
        with pytest.raises(error) as caught:
            await client.chat.completions.create(**request)  # type: ignore[call-overload]
    if code is not None:
        assert caught.value.code == code
    else:
        assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert caught.value.response.headers["x-request-id"]


async def test_insufficient_credits_is_402(stack: Stack) -> None:
    tenant = await stack.tenant(credits_usd="0.0005")
    async with _client(stack, tenant.api_key) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="privaterouter/fast",
                                                 messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402 and caught.value.code == "insufficient_credits"
    assert caught.value.body["type"] == "insufficient_quota"  # type: ignore[index]


async def test_upstream_failure_is_502_not_charged_one_event(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="privaterouter/test-error",
                                                 messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code in (502, 503) and caught.value.body["type"] == "upstream_error"  # type: ignore[index]
    [event] = await stack.settled(tenant.account_id, 1)
    assert (event.status, event.cost_pico) == ("error", 0)
    assert (await stack.account(tenant.account_id)).balance_pico == 10 * 10**12


async def test_midstream_error_reaches_the_sdk_and_charges_what_was_relayed(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with _client(stack, tenant.api_key) as client:
        stream = await client.chat.completions.create(model="privaterouter/test-midstream", stream=True,
                                                      messages=[{"role": "user", "content": "hi"}])
        received = []
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                received.append(chunk)
    assert received
    [event] = await stack.settled(tenant.account_id, 1)
    assert event.status == "error" and event.output_tokens > 0 and event.cost_pico > 0 and event.tokens_estimated


async def test_rate_limit_and_timeout_raise_the_sdk_exceptions(stack: Stack) -> None:
    tenant = await stack.tenant(key_rpm=1)
    messages = [{"role": "user", "content": "hi"}]
    async with _client(stack, tenant.api_key) as client:
        await client.chat.completions.create(model="privaterouter/fast", messages=messages)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="privaterouter/fast", messages=messages)  # type: ignore[arg-type]
    assert limited.value.code == "rate_limit_exceeded" and int(limited.value.response.headers["retry-after"]) >= 1
    other = await stack.tenant()
    async with _client(stack, other.api_key) as client:
        with pytest.raises(openai.InternalServerError) as timed_out:
            await client.chat.completions.create(model="privaterouter/test-hang", messages=messages)  # type: ignore[arg-type]
    assert timed_out.value.status_code == 504 and timed_out.value.code == "upstream_timeout"


async def test_forced_tool_call_on_a_thinking_model_streams_reasoning_then_the_call(stack: Stack) -> None:
    tenant = await stack.tenant()
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    async with _client(stack, tenant.api_key) as client:
        chunks = [c async for c in await client.chat.completions.create(
            model="privaterouter/qwen-fast", stream=True, tools=[tool], tool_choice="required",  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Find something."}])]
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning_at = [i for i, d in enumerate(deltas) if (d.model_extra or {}).get("reasoning")]
    call_at = [i for i, d in enumerate(deltas) if d.tool_calls]
    assert reasoning_at and call_at and max(reasoning_at) < min(call_at)
    [call] = [c for d in deltas for c in d.tool_calls or ()]
    assert call.function is not None and call.function.name == "lookup" and call.function.arguments == '{"q": "x"}'
    assert not "".join(d.content or "" for d in deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
