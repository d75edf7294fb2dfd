"""The translation API the gateway calls: OpenAI request -> native Ollama request -> OpenAI answer.

Everything here is pure (no I/O). The gateway resolves `body["model"]` to a `ModelTarget`, then:

    prepared = prepare(endpoint, body, target)          # validates; raises InvalidRequest (400)
    prepared.limit_output(n)                             # optional: what the balance pays for
    ... sends prepared.body to prepared.ollama_path ...
    answer, usage = render_response(prepared, target, ollama_json, response_id=..., created=...)
    # or, streaming:
    enc = stream_encoder(prepared, target, response_id=..., created=...)
    for chunk in ndjson: yield enc.feed(chunk)
    yield enc.finish()          # or enc.fail(code, message) on a mid-stream error
    enc.usage()                 # always available, estimated when Ollama's counts are missing

Only `target.public_name` ever appears in an answer; the Ollama tag stays inside `prepared.body`.
This module is a leaf: the endpoint codecs import it, so the three entry points import them lazily.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Endpoint = Literal["chat.completions", "completions", "embeddings", "responses"]

ENDPOINTS: tuple[Endpoint, ...] = ("chat.completions", "completions", "embeddings", "responses")

_ID_PREFIX: dict[str, str] = {
    "chat.completions": "chatcmpl-",
    "completions": "cmpl-",
    "embeddings": "embd-",
    "responses": "resp_",
}


@dataclass(frozen=True)
class ModelTarget:
    """One registry model as the translation layer sees it.

    `context` is the smaller of the registry's and the node's (tokens). `capabilities` are the
    Ollama capability names the nodes report (`completion`, `tools`, `thinking`, `vision`,
    `embedding`, `insert`), None when no node has said yet; `ollama_version` is the lowest
    version among the nodes serving the model, None when unknown.
    """

    public_name: str
    tag: str
    family: str
    kind: str
    context: int
    dimensions: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    capabilities: frozenset[str] | None = None
    ollama_version: tuple[int, int, int] | None = None

    def can(self, capability: str) -> bool | None:
        """Whether the model has `capability`: True, False, or None when the nodes did not say."""
        return None if self.capabilities is None else capability in self.capabilities


@dataclass
class PreparedRequest:
    """A validated request, translated to Ollama's native API, plus what the answer needs."""

    endpoint: Endpoint
    ollama_path: str
    body: dict[str, Any]
    stream: bool
    prompt_tokens_estimate: int
    max_output_tokens: int | None
    include_usage: bool
    # Endpoint-specific details the answer needs (e.g. the embeddings encoding, the settings a
    # Responses object echoes). Private to the codecs; the gateway has no reason to read it.
    meta: dict[str, Any] = field(default_factory=dict)

    def limit_output(self, n: int) -> None:
        """Cap generation at `n` tokens (what the balance pays for); never raises an existing lower cap."""
        if self.endpoint == "embeddings":
            return
        if n < 1:
            raise ValueError("limit_output needs n >= 1; refuse the request instead")
        options = self.body.setdefault("options", {})
        current = options.get("num_predict")
        # Ollama treats a negative num_predict as "unlimited".
        if not isinstance(current, int) or current < 0 or n < current:
            options["num_predict"] = n


@dataclass(frozen=True)
class Usage:
    """Tokens of one answer; `estimated` when Ollama's counts were missing and we counted ourselves."""

    input_tokens: int
    output_tokens: int
    estimated: bool

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class StreamEncoder(Protocol):
    """Turns Ollama's NDJSON chunks into the OpenAI SSE byte stream of one answer."""

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One Ollama NDJSON object -> zero or more SSE frames (b"" when there is nothing to send)."""
        ...

    def finish(self) -> bytes:
        """After the done chunk: the closing frames (finish, usage if asked, [DONE] / completed events)."""
        ...

    def fail(self, code: str, message: str, *, error_type: str | None = None) -> bytes:
        """A mid-stream error: an SSE error event, then the end of the stream."""
        ...

    def usage(self) -> Usage:
        """Ollama's counts when seen, else an estimate of what was relayed so far."""
        ...

    @property
    def started(self) -> bool:
        """Whether any byte has been produced."""
        ...


def new_response_id(endpoint: Endpoint) -> str:
    """A fresh, unique id with OpenAI's prefix for the endpoint (chatcmpl-, cmpl-, embd-, resp_)."""
    return _ID_PREFIX[endpoint] + uuid.uuid4().hex


def prepare(endpoint: Endpoint, body: Mapping[str, Any], target: ModelTarget) -> PreparedRequest:
    """Validate an OpenAI request body and translate it for Ollama; raises InvalidRequest."""
    from providers.errors import InvalidRequest
    from providers.openai.codecs import codec_for

    codec = codec_for(endpoint)
    if not isinstance(body, Mapping):
        raise InvalidRequest("The request body must be a JSON object.")
    return codec.prepare(body, target)


def render_response(
    prepared: PreparedRequest, target: ModelTarget, ollama: Mapping[str, Any], *, response_id: str, created: int
) -> tuple[dict[str, Any], Usage]:
    """Ollama's non-streaming answer -> the OpenAI answer and its token usage."""
    from providers.openai.codecs import codec_for

    return codec_for(prepared.endpoint).render(prepared, target, ollama, response_id, created)


def stream_encoder(prepared: PreparedRequest, target: ModelTarget, *, response_id: str, created: int) -> StreamEncoder:
    """A fresh encoder for one streaming answer."""
    from providers.openai.codecs import codec_for

    return codec_for(prepared.endpoint).encoder(prepared, target, response_id, created)
