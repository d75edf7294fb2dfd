"""Every SSE frame parses for line-splitting readers, whatever characters the model writes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from gateway.settings import Settings
from tests.e2e.conftest import production_env
from tests.support.scripted_ollama import Reply, ScriptedOllama, chat_line, done_line
from tests.support.stack import Stack, run_stack

# Every character Python's str.splitlines() (and so httpx/requests line readers) breaks a line on.
NASTY = ["a\u2028b", "c\u2029d", "e\u0085f", "g\rh", "i\r\nj", "k\x0bl", "m\x0cn", "o\x1cp\x1dq\x1er", "s\nt"]


def _script(path: str, body: dict[str, Any]) -> Reply:
    tag = body["model"]
    lines = [chat_line(tag, thinking="th\u2028ink"), *(chat_line(tag, content=text) for text in NASTY),
             done_line(tag, 10, 12)]
    data = Reply(lines).ndjson()
    # Cut inside the UTF-8 of U+2028 and of NEL, so each arrives in two reads.
    cuts = [data.index("\u2028".encode()) + 1, data.index("\u0085".encode()) + 1]
    return Reply(lines, splits=cuts)


@pytest.fixture
async def scripted(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    with run_stack(make_settings, database_url, tmp_path, node_apps=[ScriptedOllama(_script)],
                   **production_env(database_url)) as running:
        yield running
        await running.engine.dispose()


BODY = {"model": "privaterouter/qwen-fast", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]}


def _events(lines: list[str]) -> list[Any]:
    """The `data:` payloads of a stream read line by line, as a conforming SSE client would."""
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[len("data: "):]))  # raises if a frame was split
        else:
            assert line in ("", "data: [DONE]") or line.startswith(("event: ", ":")), repr(line)
    return out


def _check_chat(chunks: list[dict[str, Any]]) -> None:
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(NASTY)
    assert "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks if c["choices"]) == "th\u2028ink"
    *head, last = chunks
    assert all("usage" in c and c["usage"] is None for c in head)  # null on every chunk but the last
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 12


async def test_httpx_iter_lines(scripted: Stack) -> None:
    tenant = await scripted.tenant()
    async with httpx.AsyncClient(timeout=20) as http, http.stream(
            "POST", f"{scripted.v1}/chat/completions", json=BODY,
            headers={"Authorization": f"Bearer {tenant.api_key}"}) as response:
        lines = [line async for line in response.aiter_lines()]
    _check_chat(_events(lines))


async def test_requests_iter_lines_decode_unicode(scripted: Stack) -> None:
    tenant = await scripted.tenant()

    def read() -> list[str]:
        with requests.post(f"{scripted.v1}/chat/completions", json=BODY, stream=True, timeout=20,
                           headers={"Authorization": f"Bearer {tenant.api_key}"}) as response:
            response.encoding = "utf-8"
            return list(response.iter_lines(decode_unicode=True))

    _check_chat(_events(await asyncio.to_thread(read)))


async def test_responses_api_stream_too(scripted: Stack) -> None:
    tenant = await scripted.tenant()
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    async with httpx.AsyncClient(timeout=20, headers=headers) as http:
        async with http.stream("POST", f"{scripted.v1}/responses", json={
                "model": "privaterouter/qwen-fast", "input": "hi", "stream": True}) as response:
            events = _events([line async for line in response.aiter_lines()])
        completed = [e for e in events if e["type"] == "response.completed"]
        assert completed and completed[0]["response"]["output"][-1]["content"][0]["text"] == "".join(NASTY)
