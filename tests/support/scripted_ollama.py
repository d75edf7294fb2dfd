"""A scripted fake Ollama node: replays exact NDJSON lines and records every request it gets.

Unlike the emulator (`providers/ollama/fake`), nothing here "generates": a test states the exact
upstream lines, where the byte stream is cut into separate writes (`splits`, byte offsets into the
concatenated NDJSON; every cut is flushed on its own after a short pause so the reader sees it as a
separate read), and gets back the exact request bodies the gateway sent. A `stream: false` request
gets the lines merged into one object, as Ollama's own non-streaming answer is.

The informational endpoints answer like a real node: `/api/version` (settable), `/api/ps`
(settable), `/api/tags`, and `/api/show` from the emulator's catalogue (capabilities and
`model_info` as real Ollama reports them), overridable per tag.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.ollama.fake.catalogue import resolve
from providers.ollama.fake.info import show_answer

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
Line = Mapping[str, Any] | bytes


@dataclass
class Reply:
    """One scripted answer: NDJSON lines (objects or raw bytes), cut points, status."""

    lines: Sequence[Line] = ()
    splits: Sequence[int] = ()  # byte offsets into b"".join(lines) where a write ends
    status: int = 200
    body: bytes | None = None  # a whole non-NDJSON body (error bodies, garbage)

    def ndjson(self) -> bytes:
        return b"".join(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n" for line in self.lines)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    body: Any  # decoded JSON, or None


def done_line(tag: str, prompt: int | None = 10, evals: int | None = 5, reason: str = "stop",
              **message: Any) -> dict[str, Any]:
    """Ollama's final chat line; counts left out when None (Ollama omits them when zero or unknown)."""
    line: dict[str, Any] = {"model": tag, "created_at": "2026-01-01T00:00:00Z",
                            "message": {"role": "assistant", "content": "", **message},
                            "done": True, "done_reason": reason}
    if prompt is not None:
        line["prompt_eval_count"] = prompt
    if evals is not None:
        line["eval_count"] = evals
    return line


def chat_line(tag: str, **message: Any) -> dict[str, Any]:
    """One non-final chat line carrying `message` fields (content, thinking, tool_calls)."""
    return {"model": tag, "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": "", **message}, "done": False}


def merge(lines: Sequence[Line]) -> dict[str, Any]:
    """The single object Ollama sends for `stream: false`: texts joined, tool calls gathered, final counts."""
    objects = [orjson.loads(line) if isinstance(line, bytes) else dict(line) for line in lines]
    if not objects:
        return {}
    merged = dict(objects[-1])
    if "message" in merged:
        content = "".join(o.get("message", {}).get("content", "") for o in objects)
        thinking = "".join(o.get("message", {}).get("thinking", "") for o in objects)
        calls = [c for o in objects for c in o.get("message", {}).get("tool_calls") or ()]
        message = {**merged["message"], "content": content}
        if thinking:
            message["thinking"] = thinking
        if calls:
            message["tool_calls"] = calls
        merged["message"] = message
    elif "embeddings" not in merged:
        merged["response"] = "".join(o.get("response", "") for o in objects)
    return merged


Script = Callable[[str, dict[str, Any]], Reply]


@dataclass
class ScriptedOllama:
    """The ASGI app. `script(path, body)` decides every inference answer; `requests` records them all."""

    script: Script
    version: str = "0.12.3"
    ps_models: list[dict[str, Any]] = field(default_factory=list)
    show_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    pause: float = 0.02  # seconds between cut writes
    requests: list[Recorded] = field(default_factory=list)

    def bodies(self, path: str) -> list[Any]:
        """The decoded bodies the node received on `path`, oldest first."""
        return [r.body for r in self.requests if r.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = orjson.loads(raw) if raw else None
        path = scope["path"]
        self.requests.append(Recorded(scope["method"], path, body))
        if path == "/api/version":
            await _json(send, 200, {"version": self.version})
        elif path == "/api/ps":
            await _json(send, 200, {"models": self.ps_models})
        elif path == "/api/tags":
            await _json(send, 200, {"models": []})
        elif path == "/api/show":
            await self._show(send, body or {})
        else:
            await self._reply(send, self.script(path, body or {}), path, body or {})

    async def _show(self, send: Send, body: dict[str, Any]) -> None:
        tag = str(body.get("model") or body.get("name") or "")
        if tag in self.show_overrides:
            await _json(send, 200, self.show_overrides[tag])
            return
        model = resolve(tag, {})
        if model is None:
            await _json(send, 404, {"error": f"model '{tag}' not found"})
            return
        await _json(send, 200, show_answer(model))

    async def _reply(self, send: Send, reply: Reply, path: str, body: dict[str, Any]) -> None:
        if reply.body is not None:
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": [(b"content-type", b"application/json; charset=utf-8")]})
            await send({"type": "http.response.body", "body": reply.body})
            return
        if body.get("stream") is False or path not in ("/api/chat", "/api/generate"):
            await _json(send, reply.status, merge(reply.lines))
            return
        data = reply.ndjson()
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(b"content-type", b"application/x-ndjson")]})
        cuts = [0, *sorted(o for o in reply.splits if 0 < o < len(data)), len(data)]
        for start, end in zip(cuts, cuts[1:], strict=False):
            await send({"type": "http.response.body", "body": data[start:end], "more_body": True})
            await asyncio.sleep(self.pause)
        await send({"type": "http.response.body", "body": b""})


async def _json(send: Send, status: int, payload: Any) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json; charset=utf-8")]})
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})
