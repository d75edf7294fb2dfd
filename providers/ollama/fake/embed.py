"""`POST /api/embed` and the legacy `POST /api/embeddings`: deterministic unit vectors from a hash of the text."""

from __future__ import annotations

import hashlib
import math
import sys
import time
from array import array
from functools import lru_cache
from typing import Any

from . import decode
from .asgi import FakeError, Receive, Send, send_json
from .catalogue import EMBEDDING
from .emit import respond_object
from .replies import word_count
from .runtime import SLOW_TOKEN_DELAY, Runtime

NOT_AN_EMBEDDER = "this model does not support embeddings"
CONTEXT_EXCEEDED = "the input length exceeds the context length"


@lru_cache(maxsize=2048)
def unit_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """An L2-normalised vector that depends only on `text` and `dimensions`."""
    values = array("h", hashlib.shake_256(text.encode("utf-8", "surrogatepass")).digest(2 * dimensions))
    if sys.byteorder == "big":
        values.byteswap()
    return _normalise([float(v) for v in values])


def _normalise(values: list[float] | tuple[float, ...]) -> tuple[float, ...]:
    norm = math.hypot(*values) or 1.0
    return tuple(v / norm for v in values)


def _inputs(request: dict[str, Any]) -> list[str]:
    value = request.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise FakeError(400, "invalid input type")


async def embed(rt: Runtime, body: bytes, send: Send, receive: Receive) -> None:
    """POST /api/embed."""
    started = time.perf_counter_ns()
    request = decode.parse_object(body, "api.EmbedRequest")
    requested = decode.string(request, "model", "EmbedRequest")
    truncate = decode.boolean(request, "truncate", "EmbedRequest") is not False
    dimensions = decode.integer(request, "dimensions", "EmbedRequest")
    keep_alive = decode.keep_alive(request)
    inputs = _inputs(request)
    model = rt.find(requested)
    options = decode.options(request, "EmbedRequest")
    await rt.schedule(model, receive)
    rt.residency.touch(model, keep_alive, options.num_ctx)
    if not inputs:
        await send_json(send, 200, {"model": requested, "embeddings": []})
        return
    if EMBEDDING not in model.capabilities:
        raise FakeError(500, NOT_AN_EMBEDDER)
    limit = min(options.num_ctx, model.spec.context_length)
    native = rt.config.embedding_dimensions
    vectors: list[tuple[float, ...]] = []
    tokens = 0
    for text in inputs:
        count = max(word_count(text), 1)
        if count > limit:
            if not truncate:
                raise FakeError(400, CONTEXT_EXCEEDED)
            text, count = " ".join(text.split()[:limit]), limit
        vector = unit_vector(text, native)
        if 0 < dimensions < native:
            vector = _normalise(vector[:dimensions])
        vectors.append(vector)
        tokens += count
    loaded = time.perf_counter_ns()

    def build() -> dict[str, Any]:
        now = time.perf_counter_ns()
        out: dict[str, Any] = {"model": requested, "embeddings": vectors,
                               "total_duration": max(now - started, 1_000), "load_duration": max(loaded - started, 1)}
        if not model.has("-no-usage"):
            out["prompt_eval_count"] = tokens
        return out

    delay = rt.config.first_token_delay + (SLOW_TOKEN_DELAY if model.has("-slow") else 0.0)
    await respond_object(build, delay, model, send, receive, rt.stats)


async def embeddings(rt: Runtime, body: bytes, send: Send, receive: Receive) -> None:
    """POST /api/embeddings (legacy: one prompt, one vector)."""
    request = decode.parse_object(body, "api.EmbeddingRequest")
    requested = decode.string(request, "model", "EmbeddingRequest")
    prompt = decode.string(request, "prompt", "EmbeddingRequest")
    keep_alive = decode.keep_alive(request)
    if not requested:
        raise FakeError(400, "model is required")
    model = rt.find(requested)
    options = decode.options(request, "EmbeddingRequest")
    await rt.schedule(model, receive)
    rt.residency.touch(model, keep_alive, options.num_ctx)
    if not prompt:
        await send_json(send, 200, {"embedding": []})
        return
    if EMBEDDING not in model.capabilities:
        raise FakeError(500, NOT_AN_EMBEDDER)
    vector = unit_vector(prompt, rt.config.embedding_dimensions)
    delay = rt.config.first_token_delay + (SLOW_TOKEN_DELAY if model.has("-slow") else 0.0)
    await respond_object(lambda: {"embedding": vector}, delay, model, send, receive, rt.stats)
