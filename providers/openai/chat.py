"""/v1/chat/completions <-> /api/chat: request validation and translation, non-streaming answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import ModelTarget, PreparedRequest, Usage
from providers.errors import UpstreamProtocolError
from providers.families import get_family
from providers.openai.forced_call import ForcedCall
from providers.openai.logprobs import content_logprobs, request_logprobs
from providers.openai.messages import translate_messages
from providers.openai.native import (
    base_options,
    chat_body,
    reasoning_effort,
    reasoning_excluded,
    require_kind,
    think_value,
)
from providers.openai.output import OutputReader, cached_tokens, finish_reason
from providers.openai.params import (
    check_context,
    integer,
    json_format,
    mapping,
    max_output,
    refuse_if,
    sampling_options,
    stream_flags,
    string,
    unsupported,
)
from providers.openai.tools import translate_tools
from providers.tokens import measure_messages

OUTPUT_KEYS = ("max_tokens", "max_completion_tokens")


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    n = integer(body, "n", lo=1)
    if n is not None and n > 1:
        raise unsupported("n", "only one choice per request (n=1) can be generated.")
    refuse_if(body, "logit_bias", ({},), "the model server cannot bias token probabilities.")
    refuse_if(body, "audio", (), "audio output is not available.")
    refuse_if(body, "modalities", (["text"],), "only text output is available.")
    refuse_if(body, "prediction", (), "predicted outputs are not available.")
    refuse_if(body, "web_search_options", (), "web search is not available.")
    refuse_if(body, "functions", (), "legacy function calling is not supported; use 'tools'.")
    refuse_if(body, "function_call", (), "legacy function calling is not supported; use 'tool_choice'.")
    # Accepted and ignored: they change nothing about the answer.
    string(body, "user")
    string(body, "service_tier")
    if body.get("metadata") is not None:
        mapping(body["metadata"], "metadata")


def prepare(body: Mapping[str, Any], target: ModelTarget) -> PreparedRequest:
    """Validate a Chat Completions request and build the /api/chat body."""
    require_kind(target, "chat", "chat completions")
    family = get_family(target.family)
    _refuse_unsupported(body)
    stream, include_usage = stream_flags(body)
    max_tokens = max_output(body, OUTPUT_KEYS)
    options = base_options(family, target)
    options.update(sampling_options(body))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    messages = translate_messages(body.get("messages"), target)
    offered = translate_tools(body, target)
    tools = offered.tools
    effort, effort_param = reasoning_effort(body)
    fmt = json_format(body.get("response_format"), "response_format")
    if offered.forced is not None:
        if fmt is not None:
            raise unsupported("response_format", "a JSON response format cannot be combined with a forced tool "
                                                 "call (tool_choice 'required' or a named function): both need "
                                                 "the model server's structured output.")
        fmt = offered.forced.schema()
    native = chat_body(target, messages, stream, options,
                       think=think_value(effort, target, family, effort_param), fmt=fmt, tools=tools)
    native.update(request_logprobs(body, target))
    size = measure_messages(messages, tools)
    check_context(size.typical(), max_tokens, target.context, "messages")
    return PreparedRequest(endpoint="chat.completions", ollama_path="/api/chat", body=native, stream=stream,
                           prompt_tokens_estimate=size.estimate(), max_output_tokens=max_tokens,
                           include_usage=include_usage,
                           meta={"forced_call": offered.forced, "single_call": offered.single,
                                 "logprobs": bool(native.get("logprobs")),
                                 "hide_reasoning": reasoning_excluded(body)})


def usage_json(usage: Usage, reader: OutputReader, final: Mapping[str, Any] | None) -> dict[str, Any]:
    """OpenAI's `usage` object, with reasoning and cached-prompt details when there are any."""
    out: dict[str, Any] = {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                           "total_tokens": usage.total_tokens}
    reasoning = reader.reasoning_tokens(usage.output_tokens)
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    cached = cached_tokens(final)
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def render(prepared: PreparedRequest, target: ModelTarget, ollama: Mapping[str, Any], response_id: str,
           created: int) -> tuple[dict[str, Any], Usage]:
    """Ollama's /api/chat answer -> a `chat.completion` object."""
    message = ollama.get("message")
    if not isinstance(message, Mapping):
        raise UpstreamProtocolError("Ollama's chat answer has no message object")
    reader = OutputReader(get_family(target.family).think_tags)
    thinking, content = reader.read(message)
    tail_thinking, tail_content = reader.flush()
    thinking += tail_thinking
    content += tail_content
    calls = reader.tool_calls(message["tool_calls"]) if message.get("tool_calls") else []
    forced: ForcedCall | None = prepared.meta.get("forced_call")
    if forced is not None and not calls:
        calls = forced.calls(content, truncated=ollama.get("done_reason") == "length")
        if calls:
            content = ""
    if prepared.meta.get("single_call"):
        calls = calls[:1]
    answer_message: dict[str, Any] = {"role": "assistant", "content": content if content or not calls else None}
    if calls:
        answer_message["tool_calls"] = calls
    if thinking and not prepared.meta.get("hide_reasoning"):
        # DeepSeek's name, and Ollama's / OpenRouter's / vLLM's: clients read one or the other.
        answer_message["reasoning_content"] = answer_message["reasoning"] = thinking
    usage = reader.usage(ollama, prepared.prompt_tokens_estimate)
    answer = {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": target.public_name,
        "choices": [{"index": 0, "message": answer_message,
                     "logprobs": ({"content": content_logprobs(ollama.get("logprobs")), "refusal": None}
                                  if prepared.meta.get("logprobs") else None),
                     "finish_reason": finish_reason(ollama.get("done_reason"), bool(calls))}],
        "usage": usage_json(usage, reader, ollama),
    }
    return answer, usage
