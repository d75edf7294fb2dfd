"""logprobs end to end: the emulator (Ollama 0.12.11) serves them; a 0.12.3 node gets a 400 naming the parameter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from gateway.settings import Settings
from tests.support.scripted_ollama import Reply, ScriptedOllama
from tests.support.stack import Stack, run_stack

HI = [{"role": "user", "content": "hi"}]


async def test_logprobs_streaming_and_not(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0) as client:
        answer = await client.chat.completions.create(model="privaterouter/qwen-fast", messages=HI,  # type: ignore[arg-type]
                                                      logprobs=True, top_logprobs=2, reasoning_effort="none")
        chunks = [c async for c in await client.chat.completions.create(
            model="privaterouter/qwen-fast", messages=HI, logprobs=True, stream=True, reasoning_effort="none")]  # type: ignore[arg-type]
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == answer.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in logprobs.content)
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or ()]
    assert "".join(t.token for t in streamed) == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_an_older_node_refuses_logprobs_naming_the_parameter(
        make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> None:
    node = ScriptedOllama(lambda path, body: Reply(status=500, body=b'{"error":"not reached"}'), version="0.12.3")
    with run_stack(make_settings, database_url, tmp_path, node_apps=[node]) as stack:
        tenant = await stack.tenant()
        async with openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0) as client:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(model="privaterouter/qwen-fast", messages=HI, logprobs=True)  # type: ignore[arg-type]
        await stack.engine.dispose()
    assert refused.value.param == "logprobs" and "0.12.3" in refused.value.message
    assert node.bodies("/api/chat") == []


async def test_legacy_completions_logprobs(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0) as client:
        completion = await client.completions.create(model="privaterouter/fast", prompt="Once upon", logprobs=2,
                                                     max_tokens=5)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.top_logprobs and all(len(top) == 2 for top in logprobs.top_logprobs)


async def test_responses_api_logprobs(stack: Stack) -> None:
    tenant = await stack.tenant()
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0) as client:
        response = await client.responses.create(model="privaterouter/fast", input="hi", top_logprobs=2,
                                                 include=["message.output_text.logprobs"], reasoning={"effort": "none"})
    [message] = [item for item in response.output if item.type == "message"]
    part = message.content[0]
    assert part.type == "output_text" and part.logprobs
    assert "".join(lp.token for lp in part.logprobs) == part.text
    assert all(len(lp.top_logprobs) == 2 for lp in part.logprobs)
