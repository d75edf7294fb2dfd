"""Writing an inference answer: NDJSON streaming or one JSON object, with the behaviours of the model name.

Behaviours that shape the bytes on the wire live here: delays (`-slow`), `-midstream-error`,
`-drop`, `-garbage`, `-no-usage`. Errors before the first byte (`-error-*`, `-hang`) are the
handlers' business.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from .asgi import JSON_TYPE, NDJSON_TYPE, ClientWatch, Receive, Send, chunk, send_bytes, send_json, start
from .catalogue import Resolved
from .clock import utc_now
from .replies import Turn
from .state import FakeStats

MIDSTREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
GARBAGE = b"<html><body>502 Bad Gateway</body></html>\x00\xff not json\n"
PIECES_BEFORE_FAILURE = 3
# Floors for the reported durations, so rates stay finite when the emulator answers instantly.
_PROMPT_NS_PER_TOKEN = 50_000
_EVAL_NS_PER_TOKEN = 2_000_000


class Abort(Exception):
    """Leave the response unfinished so the server closes the connection mid-body."""


class Shape(Protocol):
    """How turn pieces become response objects for one endpoint."""

    def piece(self, model: str, created: str, kind: str, payload: Any) -> dict[str, Any]: ...

    def final(self, model: str, created: str, turn: Turn, metrics: dict[str, int]) -> dict[str, Any]: ...

    def whole(self, model: str, created: str, turn: Turn, metrics: dict[str, int]) -> dict[str, Any]: ...


def token_logprob(token: str, top: int) -> dict[str, Any]:
    """Ollama's logprob entry for one generated token (deterministic), with `top` alternatives when top > 0."""
    def entry(text: str) -> dict[str, Any]:
        return {"token": text, "logprob": -((zlib.crc32(text.encode()) % 997) + 1) / 1000,
                "bytes": list(text.encode())}

    out = entry(token)
    if top:
        # The chosen token first (greedy), then made-up alternatives, each less likely than the last.
        alternatives = [{**entry(f"{token}{i}"), "logprob": out["logprob"] - i} for i in range(1, top)]
        out["top_logprobs"] = [entry(token), *alternatives]
    return out


@dataclass(frozen=True)
class ChatShape:
    """`/api/chat` objects: a `message` on every line; `logprobs` (top count) when the request asked."""

    logprobs: int | None = None

    def piece(self, model: str, created: str, kind: str, payload: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": payload if kind == "content" else ""}
        if kind == "thinking":
            message["thinking"] = payload
        elif kind == "tool_calls":
            message["tool_calls"] = payload
        out = {"model": model, "created_at": created, "message": message, "done": False}
        if self.logprobs is not None and kind == "content":
            out["logprobs"] = [token_logprob(payload, self.logprobs)]
        return out

    def final(self, model: str, created: str, turn: Turn, metrics: dict[str, int]) -> dict[str, Any]:
        return {"model": model, "created_at": created, "message": {"role": "assistant", "content": ""},
                "done": True, "done_reason": turn.done_reason, **metrics}

    def whole(self, model: str, created: str, turn: Turn, metrics: dict[str, int]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": turn.text("content")}
        thinking = turn.text("thinking")
        if thinking:
            message["thinking"] = thinking
        calls = turn.tool_calls()
        if calls:
            message["tool_calls"] = calls
        out = {"model": model, "created_at": created, "message": message, "done": True,
               "done_reason": turn.done_reason, **metrics}
        if self.logprobs is not None:
            out["logprobs"] = [token_logprob(text, self.logprobs) for kind, text in turn.pieces if kind == "content"]
        return out


@dataclass(frozen=True)
class GenerateShape:
    """`/api/generate` objects: `response` always present, `context` on the last one unless raw."""

    context: list[int] | None
    logprobs: int | None = None  # top count when the request asked for logprobs

    def piece(self, model: str, created: str, kind: str, payload: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": created,
                               "response": payload if kind == "content" else ""}
        if kind == "thinking":
            out["thinking"] = payload
        out["done"] = False
        if self.logprobs is not None and kind == "content":
            out["logprobs"] = [token_logprob(payload, self.logprobs)]
        return out

    def final(self, model: str, created: str, turn: Turn, metrics: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": created, "response": "", "done": True,
                               "done_reason": turn.done_reason}
        if self.context is not None:
            out["context"] = self.context
        out.update(metrics)
        return out

    def whole(self, model: str, created: str, turn: Turn, metrics: dict[str, int]) -> dict[str, Any]:
        out: dict[str, Any] = {"model": model, "created_at": created, "response": turn.text("content")}
        thinking = turn.text("thinking")
        if thinking:
            out["thinking"] = thinking
        out["done"] = True
        out["done_reason"] = turn.done_reason
        if self.context is not None:
            out["context"] = self.context
        out.update(metrics)
        if self.logprobs is not None:
            out["logprobs"] = [token_logprob(text, self.logprobs) for kind, text in turn.pieces if kind == "content"]
        return out


@dataclass
class Timing:
    """Clock readings of one request, for the nanosecond metrics."""

    started: int
    loaded: int
    first: int = 0

    def metrics(self, turn: Turn, usage: bool) -> dict[str, int]:
        """Ollama's metrics for a finished turn; zero values are omitted as Go's omitempty does."""
        end = time.perf_counter_ns()
        first = self.first or end
        load = max(self.loaded - self.started, 1_000)
        prompt = max(first - self.loaded, turn.prompt_tokens * _PROMPT_NS_PER_TOKEN)
        evaluation = max(end - first, turn.eval_count * _EVAL_NS_PER_TOKEN)
        values = {
            "total_duration": max(end - self.started, load + prompt + evaluation),
            "load_duration": load,
            "prompt_eval_count": turn.prompt_tokens if usage else 0,
            "prompt_eval_duration": prompt,
            "eval_count": turn.eval_count if usage else 0,
            "eval_duration": evaluation,
        }
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class Answer:
    """One inference answer about to be written."""

    model: str  # echoed exactly as requested
    resolved: Resolved
    turn: Turn
    shape: Shape
    timing: Timing
    token_delay: float
    first_token_delay: float


async def respond(answer: Answer, stream: bool, send: Send, receive: Receive, stats: FakeStats) -> None:
    """Write `answer` the way its model name asks for."""
    resolved = answer.resolved
    if resolved.has("-garbage"):
        await send_bytes(send, 200, NDJSON_TYPE if stream else JSON_TYPE, GARBAGE)
        stats.completed_streams += 1
        return
    if not stream:
        await _respond_whole(answer, send, receive, stats)
        return
    if answer.token_delay or answer.first_token_delay or resolved.has("-drop"):
        await _stream_paced(answer, send, receive, stats)
        return
    # Fast path: nothing to wait for, so the whole NDJSON body goes out in one write.
    model, turn, shape = answer.model, answer.turn, answer.shape
    created = utc_now()
    answer.timing.first = time.perf_counter_ns()
    pieces = turn.pieces
    lines = [orjson.dumps(shape.piece(model, created, kind, payload)) for kind, payload in
             (pieces[:PIECES_BEFORE_FAILURE] if resolved.has("-midstream-error") else pieces)]
    if resolved.has("-midstream-error"):
        lines.append(orjson.dumps({"error": MIDSTREAM_ERROR}))
    else:
        lines.append(orjson.dumps(shape.final(model, created, turn, answer.timing.metrics(turn, _usage(resolved)))))
    lines.append(b"")
    await send(start(200, NDJSON_TYPE))
    await send(chunk(b"\n".join(lines), False))
    stats.completed_streams += 1


def _usage(resolved: Resolved) -> bool:
    return not resolved.has("-no-usage")


async def _stream_paced(answer: Answer, send: Send, receive: Receive, stats: FakeStats) -> None:
    model, turn, shape, resolved = answer.model, answer.turn, answer.shape, answer.resolved
    failing = resolved.has("-midstream-error") or resolved.has("-drop")
    pieces = turn.pieces[:PIECES_BEFORE_FAILURE] if failing else turn.pieces
    watch = ClientWatch(receive)
    try:
        await send(start(200, NDJSON_TYPE))
        delay = answer.first_token_delay
        for kind, payload in pieces:
            delay += answer.token_delay
            if delay:
                await asyncio.sleep(delay)
            delay = 0.0
            if not answer.timing.first:
                answer.timing.first = time.perf_counter_ns()
            await send(chunk(orjson.dumps(shape.piece(model, utc_now(), kind, payload)) + b"\n", True))
        if resolved.has("-drop"):
            stats.dropped_connections += 1
            raise Abort
        if resolved.has("-midstream-error"):
            last = orjson.dumps({"error": MIDSTREAM_ERROR})
        else:
            last = orjson.dumps(shape.final(model, utc_now(), turn, answer.timing.metrics(turn, _usage(resolved))))
        watch.close()
        await send(chunk(last + b"\n", False))
        stats.completed_streams += 1
    except asyncio.CancelledError:
        if not watch.absorb():
            raise
        stats.cancelled_streams += 1
    finally:
        watch.close()


async def _respond_whole(answer: Answer, send: Send, receive: Receive, stats: FakeStats) -> None:
    turn, resolved = answer.turn, answer.resolved
    delay = answer.first_token_delay + answer.token_delay * len(turn.pieces)

    def build() -> dict[str, Any]:
        answer.timing.first = answer.timing.first or time.perf_counter_ns()
        metrics = answer.timing.metrics(turn, _usage(resolved))
        return answer.shape.whole(answer.model, utc_now(), turn, metrics)

    await respond_object(build, delay, resolved, send, receive, stats)


async def respond_object(build: Callable[[], dict[str, Any]], delay: float, resolved: Resolved, send: Send,
                         receive: Receive, stats: FakeStats) -> None:
    """Write one JSON object after `delay`, honouring -midstream-error (500), -drop and -garbage."""
    if resolved.has("-garbage"):
        await send_bytes(send, 200, JSON_TYPE, GARBAGE)
        stats.completed_streams += 1
        return
    if delay:
        watch = ClientWatch(receive)
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            stats.cancelled_streams += 1
            return
        finally:
            watch.close()
    if resolved.has("-midstream-error"):
        await send_json(send, 500, {"error": MIDSTREAM_ERROR})
        stats.completed_streams += 1
        return
    body = orjson.dumps(build())
    if resolved.has("-drop"):
        await send(start(200, JSON_TYPE, len(body)))
        await send(chunk(body[: len(body) // 2], True))
        stats.dropped_connections += 1
        raise Abort
    await send_bytes(send, 200, JSON_TYPE, body)
    stats.completed_streams += 1
