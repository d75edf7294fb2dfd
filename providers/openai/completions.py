"""/v1/completions (legacy text) <-> /api/generate, streaming and not.

The prompt goes through the model's template, as with Ollama's own /v1 layer. A thinking family
is asked not to think: a text completion has nowhere to put the reasoning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import ModelTarget, PreparedRequest, Usage
from providers.errors import InvalidRequest, UpstreamProtocolError
from providers.families import get_family
from providers.openai.logprobs import legacy_logprobs, request_legacy_logprobs
from providers.openai.native import base_options, require_kind
from providers.openai.output import OutputReader
from providers.openai.params import (
    check_context,
    integer,
    max_output,
    refuse_if,
    sampling_options,
    stream_flags,
    string,
    unsupported,
    wrong_type,
)
from providers.openai.stream_base import DataStreamEncoder
from providers.sse import DONE, SLOT, FrameTemplate, data_frame
from providers.tokens import measure_texts


def _prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt")
    if isinstance(prompt, list):
        if not all(isinstance(p, str) for p in prompt):
            raise unsupported("prompt", "token arrays are not supported; send the prompt as a string.")
        if len(prompt) != 1:
            raise unsupported("prompt", "send one prompt per request (a string, or an array of one string).")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise wrong_type("prompt", "a string", prompt)
    return prompt


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    if body.get("echo"):
        raise unsupported("echo", "the model server cannot echo the prompt back.")
    for key in ("n", "best_of"):
        value = integer(body, key, lo=1)
        if value is not None and value > 1:
            raise unsupported(key, "only one completion per request can be generated.")
    refuse_if(body, "logit_bias", ({},), "the model server cannot bias token probabilities.")
    string(body, "user")


def prepare(body: Mapping[str, Any], target: ModelTarget) -> PreparedRequest:
    """Validate a legacy Completions request and build the /api/generate body."""
    require_kind(target, "chat", "completions")
    family = get_family(target.family)
    _refuse_unsupported(body)
    prompt = _prompt(body)
    suffix = string(body, "suffix")
    stream, include_usage = stream_flags(body)
    max_tokens = max_output(body, ("max_tokens",))
    options = base_options(family, target)
    options.update(sampling_options(body))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    native: dict[str, Any] = {"model": target.tag, "prompt": prompt, "stream": stream, "options": options}
    if suffix:
        native["suffix"] = suffix
    native.update(request_legacy_logprobs(body, target))
    if target.can("thinking") is not False:
        native["think"] = False  # a text completion has no place for reasoning; harmless where none happens
    size = measure_texts((prompt, suffix or ""))
    check_context(size.typical(), max_tokens, target.context, "prompt")
    return PreparedRequest(endpoint="completions", ollama_path="/api/generate", body=native, stream=stream,
                           prompt_tokens_estimate=size.estimate(), max_output_tokens=max_tokens,
                           include_usage=include_usage, meta={"logprobs": bool(native.get("logprobs"))})


def _finish_reason(done_reason: Any) -> str:
    return "length" if done_reason == "length" else "stop"


def _usage_json(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens}


def _read(reader: OutputReader, chunk: Mapping[str, Any]) -> str:
    text = chunk.get("response", "")
    if not isinstance(text, str):
        raise UpstreamProtocolError("Ollama's generate answer has a non-string response")
    # Thinking (if a model thinks anyway) is generated and paid for, but has no place in the answer.
    _, text = reader.read({"content": text, "thinking": chunk.get("thinking")})
    return text


def render(prepared: PreparedRequest, target: ModelTarget, ollama: Mapping[str, Any], response_id: str,
           created: int) -> tuple[dict[str, Any], Usage]:
    """Ollama's /api/generate answer -> a `text_completion` object."""
    reader = OutputReader(think_tags=False)
    text = _read(reader, ollama)
    usage = reader.usage(ollama, prepared.prompt_tokens_estimate)
    answer = {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": target.public_name,
        "choices": [{"text": text, "index": 0,
                     "logprobs": legacy_logprobs(ollama.get("logprobs"), 0)[0] if prepared.meta.get("logprobs")
                     else None,
                     "finish_reason": _finish_reason(ollama.get("done_reason"))}],
        "usage": _usage_json(usage),
    }
    return answer, usage


class CompletionStreamEncoder(DataStreamEncoder):
    """Text deltas as `text_completion` chunks, a final chunk with finish_reason, usage if asked, [DONE]."""

    __slots__ = ("_head", "_text", "_logprobs", "_offset")

    def __init__(self, prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int) -> None:
        super().__init__(prepared, OutputReader(think_tags=False))
        self._head = {"id": response_id, "object": "text_completion", "created": created,
                      "model": target.public_name}
        tail = {"usage": None} if prepared.include_usage else {}  # null on every chunk but the last, as OpenAI
        self._text = FrameTemplate({**self._head, "choices": [
            {"text": SLOT, "index": 0, "logprobs": None, "finish_reason": None}], **tail})
        self._logprobs = bool(prepared.meta.get("logprobs"))
        self._offset = 0  # characters generated so far: legacy logprobs' text_offset continues across chunks

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One /api/generate chunk -> at most one SSE frame."""
        if self._closed:
            return b""
        if chunk.get("done"):
            self._final = chunk
        text = _read(self._reader, chunk)
        if not text:
            return b""
        self._started = True
        if self._logprobs:
            logprobs, self._offset = legacy_logprobs(chunk.get("logprobs"), self._offset)
            return data_frame({**self._head, "choices": [
                {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": None}],
                **({"usage": None} if self._prepared.include_usage else {})})
        return self._text.render(orjson.dumps(text))

    def finish(self) -> bytes:
        """The finish chunk, the usage chunk when asked for, and [DONE]."""
        if self._closed:
            return b""
        self._started = self._closed = True
        done_reason = self._final.get("done_reason") if self._final is not None else None
        frames = [data_frame({**self._head, "choices": [
            {"text": "", "index": 0, "logprobs": None, "finish_reason": _finish_reason(done_reason)}],
            **({"usage": None} if self._prepared.include_usage else {})})]
        if self._prepared.include_usage:
            frames.append(data_frame({**self._head, "choices": [], "usage": _usage_json(self.usage())}))
        frames.append(DONE)
        return b"".join(frames)



def encoder(prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int) -> CompletionStreamEncoder:
    """A stream encoder for one legacy completion."""
    return CompletionStreamEncoder(prepared, target, response_id, created)
