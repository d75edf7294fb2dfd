"""A timed fake Ollama: exact counts and timings chosen by the test, over real HTTP.

`scripted_ollama.py` replays fixed NDJSON bytes; this one computes answers per request instead.
The emulator (providers/ollama/fake) counts prompts by words; money tests need what real models do
(a hidden SYSTEM prompt of 3,000 tokens, one token per character, an answer that takes seconds).
A `Script` decides, per request body, Ollama's `prompt_eval_count`, the pieces of the answer and
the delay before each piece. `/api/chat` streams NDJSON when asked and answers the merged object
otherwise (after the whole generation, as Ollama does). Requests, finished generations and
cancelled ones are recorded for assertions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.app import create_app
from gateway.db.engine import create_engine
from gateway.settings import Settings
from tests.support.servers import serve_app
from tests.support.stack import Stack, registry_text


@dataclass(frozen=True)
class Reply:
    """One scripted answer: Ollama's prompt count, the content pieces and the delay before each."""

    prompt_eval_count: int | None
    pieces: list[str]
    delay: float = 0.0
    report_eval_count: bool = True


Script = Callable[[dict[str, Any]], Reply]


@dataclass
class ScriptedOllama:
    script: Script
    show: dict[str, Any] | None = None  # the /api/show answer (404 when None)
    requests: list[dict[str, Any]] = field(default_factory=list)
    shows: list[str] = field(default_factory=list)  # the models /api/show was asked about
    finished: int = 0
    cancelled: int = 0
    pieces_sent: int = 0

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/version", lambda request: _json({"version": "0.12.3"})),
            Route("/api/ps", lambda request: _json({"models": []})),
            Route("/api/tags", lambda request: _json({"models": []})),
            Route("/api/chat", self._chat, methods=["POST"]),
            Route("/api/show", self._show, methods=["POST"]),
        ])

    async def _show(self, request: Request) -> Response:
        self.shows.append(str(orjson.loads(await request.body()).get("model")))
        if self.show is None:
            return Response(b'{"error":"model not found"}', status_code=404, media_type="application/json")
        return _json(self.show)

    async def _chat(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        self.requests.append(body)
        reply = self.script(body)
        limit = (body.get("options") or {}).get("num_predict")
        pieces = reply.pieces if not isinstance(limit, int) or limit < 0 else reply.pieces[:limit]
        done_reason = "length" if len(pieces) < len(reply.pieces) else "stop"
        done = {"model": body["model"], "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": done_reason}
        if reply.prompt_eval_count is not None:
            done["prompt_eval_count"] = reply.prompt_eval_count
        if reply.report_eval_count:
            done["eval_count"] = len(pieces)
        if body.get("stream", True):
            return StreamingResponse(self._stream(body["model"], pieces, reply.delay, done),
                                     media_type="application/x-ndjson")
        try:
            for _ in pieces:
                await asyncio.sleep(reply.delay)
                self.pieces_sent += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        done["message"]["content"] = "".join(pieces)
        return _json(done)

    async def _stream(self, model: str, pieces: list[str], delay: float, done: dict[str, Any]) -> AsyncIterator[bytes]:
        try:
            for piece in pieces:
                await asyncio.sleep(delay)
                self.pieces_sent += 1
                yield orjson.dumps({"model": model, "created_at": "2026-01-01T00:00:00Z",
                                    "message": {"role": "assistant", "content": piece}, "done": False}) + b"\n"
            yield orjson.dumps(done) + b"\n"
            self.finished += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json")


def model_entry(name: str, *, input_price: str, output_price: str, context: int = 32768) -> str:
    """A models.yaml entry for a chat model served by the scripted node (tag `scripted:latest`)."""
    return (f"  - name: {name}\n    tag: scripted:latest\n    family: gemma\n    kind: chat\n"
            f"    context: {context}\n    input_price: \"{input_price}\"\n    output_price: \"{output_price}\"\n")


@contextmanager
def run_scripted_stack(make_settings: Callable[..., Settings], database_url: str, tmp_path: Path,
                       fake: ScriptedOllama, *, models: str, **env: str) -> Iterator[Stack]:
    """The scripted node and a real gateway on loopback, with `models` (model_entry text) added."""
    with ExitStack() as stack:
        url = stack.enter_context(serve_app(fake.app()))
        models_file = tmp_path / "models.yaml"
        models_file.write_text(registry_text([url], extra=models))
        settings = make_settings(DATABASE_URL=database_url, MODELS_FILE=str(models_file),
                                 UPSTREAM_FIRST_BYTE_TIMEOUT=env.pop("UPSTREAM_FIRST_BYTE_TIMEOUT", "10"),
                                 HEALTH_CHECK_INTERVAL=env.pop("HEALTH_CHECK_INTERVAL", "0.2"), **env)
        base_url = stack.enter_context(serve_app(create_app(settings)))
        yield Stack(base_url, [url], [], settings, create_engine(database_url), models_file)
