"""Shared builders for the translation tests: model targets, Ollama answers, SSE parsing, SDK clients."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai._streaming import SSEDecoder

from providers.base import Endpoint, ModelTarget, prepare
from providers.errors import InvalidRequest

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
PNG_URL = "data:image/png;base64," + PNG_B64


# What real nodes report in /api/show for the shipped models of each family (gemma4 and qwen3 think,
# deepseek-r1 thinks without tools, llama3.2 neither thinks nor sees).
CAPABILITIES = {
    "gemma": frozenset({"completion", "tools", "vision", "thinking"}),
    "qwen": frozenset({"completion", "tools", "thinking"}),
    "deepseek": frozenset({"completion", "thinking"}),
    "llama": frozenset({"completion", "tools"}),
    "embedding": frozenset({"embedding"}),
}


def target(family: str = "qwen", kind: str = "chat", context: int = 32768, **kw: Any) -> ModelTarget:
    """A registry model as the gateway would hand it over, with its node's capabilities."""
    name = kw.pop("public_name", f"privaterouter/{family}-test")
    tag = kw.pop("tag", f"{family}-tag:latest")
    kw.setdefault("capabilities", CAPABILITIES.get(family))
    return ModelTarget(public_name=name, tag=tag, family=family, kind=kind, context=context, **kw)


def user(text: str = "Hello") -> dict[str, Any]:
    return {"role": "user", "content": text}


def chat_request(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "privaterouter/qwen-test", "messages": [user()]}
    body.update(kw)
    return body


def ollama_chat(content: str = "", *, thinking: str | None = None, tool_calls: list[dict[str, Any]] | None = None,
                done: bool = True, done_reason: str | None = "stop", prompt_eval_count: int | None = 11,
                eval_count: int | None = 7, **extra: Any) -> dict[str, Any]:
    """One /api/chat object (an answer, or a stream chunk when done=False)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    out: dict[str, Any] = {"model": "tag", "created_at": "2026-01-01T00:00:00.1Z", "message": message, "done": done}
    if done:
        if done_reason is not None:
            out["done_reason"] = done_reason
        if prompt_eval_count is not None:
            out["prompt_eval_count"] = prompt_eval_count
        if eval_count is not None:
            out["eval_count"] = eval_count
    out.update(extra)
    return out


def ollama_call(name: str, arguments: dict[str, Any], index: int = 0, call_id: str | None = "call_ab12cd34"
                ) -> dict[str, Any]:
    call: dict[str, Any] = {"function": {"index": index, "name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return call


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    """(event, data) of every SSE frame, parsed by the openai SDK's own decoder."""
    return [(sse.event, sse.data) for sse in SSEDecoder().iter_bytes(iter([raw]))]


def sse_json(raw: bytes) -> list[Any]:
    """The JSON payloads of a `data:` stream, [DONE] excluded."""
    return [orjson.loads(data) for _, data in sse_events(raw) if data != "[DONE]"]


Handler = Callable[[dict[str, Any]], tuple[bytes, str]]


def sdk_client(handler: Handler, seen: list[dict[str, Any]] | None = None, *, strict: bool = True) -> openai.OpenAI:
    """An OpenAI SDK client whose HTTP goes to `handler(request_json) -> (body, content_type)`.

    Strict response validation is on by default, so every answer must match the SDK's typed models.
    """

    def respond(request: httpx2.Request) -> httpx2.Response:
        body = orjson.loads(request.content)
        if seen is not None:
            seen.append(body)
        content, content_type = handler(body)
        return httpx2.Response(200, content=content, headers={"content-type": content_type})

    transport = httpx2.MockTransport(respond)
    return openai.OpenAI(api_key="sk-pr-test", base_url="http://gateway.invalid/v1",
                         http_client=httpx2.Client(transport=transport), max_retries=0,
                         _strict_response_validation=strict)


def concat(frames: Iterable[bytes]) -> bytes:
    return b"".join(frames)


def rejects(endpoint: Endpoint, body: Mapping[str, Any], tgt: ModelTarget | None = None) -> InvalidRequest:
    """The InvalidRequest `prepare` raises for `body` (the test fails if it raises none)."""
    with pytest.raises(InvalidRequest) as info:
        prepare(endpoint, body, tgt or target())
    return info.value


def options_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("options", {}))
