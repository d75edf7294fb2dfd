"""Answers never show internals: Ollama's error texts, node names, Ollama tags, raw upstream bytes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.scripted_ollama import Reply, ScriptedOllama, chat_line
from tests.support.stack import Stack, run_stack

# What each scripted failure sends; every one of them names internals.
FAILURES: dict[str, Reply] = {
    "refusal": Reply(status=400, body=b'{"error":"registry.ollama.ai/library/qwen3:latest does not support tools"}'),
    "unknown-refusal": Reply(status=400, body=b'{"error":"node0 cannot parse qwen3:latest option xyz"}'),
    "crash": Reply(status=500, body=b'{"error":"llama runner process has terminated: node0 qwen3:latest CUDA"}'),
    "missing": Reply(status=404, body=b'{"error":"model \'qwen3:latest\' not found"}'),
    "garbage": Reply(status=200, body=b"<html>node0 qwen3:latest proxy error</html>"),
    "midstream": Reply([chat_line("qwen3:latest", content="Hi"),
                        b'{"error":"node0 qwen3:latest: llama runner died"}\n']),
}
INTERNALS = ("qwen3", "node0", "registry.ollama", "llama runner", "CUDA", "html", "127.0.0.1")


@pytest.fixture
async def node(make_settings: Callable[..., Settings], database_url: str,
               tmp_path: Path) -> AsyncIterator[tuple[Stack, ScriptedOllama]]:
    scripted = ScriptedOllama(lambda path, body: FAILURES["refusal"])
    with run_stack(make_settings, database_url, tmp_path, node_apps=[scripted],
                   **production_env(database_url)) as running:
        yield running, scripted
        await running.engine.dispose()


def _clean(text: str) -> None:
    for secret in INTERNALS:
        assert secret not in text, f"{secret!r} leaked in {text!r}"


@pytest.mark.parametrize("failure,status,code", [
    ("refusal", 400, "invalid_body"), ("unknown-refusal", 400, "invalid_body"), ("crash", 502, "upstream_error"),
    ("missing", 502, "upstream_error"), ("garbage", 502, "upstream_error")])
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_failures_become_stable_messages_naming_the_public_model(
        node: tuple[Stack, ScriptedOllama], failure: str, status: int, code: str, stream: bool) -> None:
    stack, scripted = node
    scripted.script = lambda path, body: FAILURES[failure]
    tenant = await stack.tenant()
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(f"{stack.v1}/chat/completions",
                                   headers={"Authorization": f"Bearer {tenant.api_key}"},
                                   json={"model": "privaterouter/qwen-fast", "stream": stream,
                                         "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and "privaterouter/qwen-fast" in error["message"]
    _clean(response.text)
    if failure == "refusal":
        assert error["param"] == "tools" and "cannot call tools" in error["message"]


async def test_a_midstream_error_frame_is_stable(node: tuple[Stack, ScriptedOllama]) -> None:
    stack, scripted = node
    scripted.script = lambda path, body: FAILURES["midstream"]
    tenant = await stack.tenant()
    async with httpx.AsyncClient(timeout=20) as http, http.stream(
            "POST", f"{stack.v1}/chat/completions", headers={"Authorization": f"Bearer {tenant.api_key}"},
            json={"model": "privaterouter/qwen-fast", "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]}) as response:
        text = "".join([chunk async for chunk in response.aiter_text()])
    last = json.loads(text.strip().split("\n\n")[-1][len("data: "):])
    assert last["error"]["code"] == "upstream_error" and "privaterouter/qwen-fast" in last["error"]["message"]
    _clean(text)


async def test_token_id_arrays_get_a_400_naming_the_langchain_setting(node: tuple[Stack, ScriptedOllama]) -> None:
    stack, _ = node
    tenant = await stack.tenant()
    async with openai.AsyncOpenAI(base_url=stack.v1, api_key=tenant.api_key, max_retries=0) as client:
        # What LangChain's OpenAIEmbeddings sends with its defaults: lists of tiktoken ids.
        with pytest.raises(openai.BadRequestError) as refused:
            await client.embeddings.create(model="privaterouter/embed", input=[[9906, 1917]])
    error: Any = refused.value.body
    assert error["param"] == "input[0]" and "check_embedding_ctx_length=False" in error["message"]


async def test_the_upstreams_own_words_are_logged_for_operators(node: tuple[Stack, ScriptedOllama],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    stack, scripted = node
    scripted.script = lambda path, body: FAILURES["crash"]
    caplog.set_level("WARNING", logger="gateway.upstream")
    tenant = await stack.tenant()
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(f"{stack.v1}/chat/completions",
                                   headers={"Authorization": f"Bearer {tenant.api_key}"},
                                   json={"model": "privaterouter/qwen-fast",
                                         "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.upstream"]
    assert "llama runner process has terminated" in line and "privaterouter/qwen-fast" in line and "node0" in line
