"""/v1/responses, text profile <-> /api/chat.

Supported: `input` as a string or as message items (roles user/assistant/system/developer, text
parts), `instructions` (a leading system message), `max_output_tokens`, `temperature`, `top_p`,
`text.format` (text / json_object / json_schema), `reasoning.effort` on thinking families,
`stream`. Refused with a 400 naming the parameter: tools and tool choices other than none/auto,
`previous_response_id`, `conversation`, `background`, `store: true` (nothing is kept),
`prompt` templates, image/file/audio inputs, function-call items, `include` other than
`reasoning.encrypted_content`, logprobs. Reasoning items passed back as input are skipped.

A thinking model's reasoning comes out as a `reasoning` output item whose content is the full
`reasoning_text` (there is no summariser), before the `message` item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import ModelTarget, PreparedRequest, Usage
from providers.errors import InvalidRequest
from providers.families import get_family
from providers.openai.messages import ROLES, content_parts
from providers.openai.native import base_options, chat_body, require_kind, think_value
from providers.openai.output import OutputReader, cached_tokens
from providers.openai.params import (
    check_context,
    choice,
    integer,
    json_format,
    mapping,
    refuse_if,
    sampling_options,
    stream_flags,
    string,
    unsupported,
    wrong_type,
)
from providers.sse import SLOT, FrameTemplate, event_frame
from providers.tokens import measure_messages

_ITEM_ROLES = ("user", "assistant", "system", "developer")
_INCLUDE_OK = ("reasoning.encrypted_content",)


# --- request ------------------------------------------------------------------------------------


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise wrong_type("tools", "an array", tools)
    if tools:
        raise unsupported("tools", "tool calling is not available in the Responses API text profile.")
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and tool_choice not in ("none", "auto"):
        raise unsupported("tool_choice", "tool calling is not available in the Responses API text profile.")
    refuse_if(body, "previous_response_id", (), "responses are not stored; send the whole conversation as input.")
    refuse_if(body, "conversation", (), "conversations are not stored; send the whole conversation as input.")
    refuse_if(body, "background", (False,), "background responses are not available.")
    refuse_if(body, "store", (False,), "responses are not stored; omit 'store' or set it to false.")
    refuse_if(body, "prompt", (), "stored prompt templates are not available.")
    refuse_if(body, "top_logprobs", (0,), "token log probabilities are not available from the model server.")
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise wrong_type("include", "an array", include)
        for i, item in enumerate(include):
            if item not in _INCLUDE_OK:
                raise unsupported(f"include[{i}]", f"{item!r} cannot be included by this gateway.")
    choice(body, "truncation", ("auto", "disabled"))
    for key in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        string(body, key)
    if body.get("metadata") is not None:
        mapping(body["metadata"], "metadata")


def _input_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    value = body.get("input")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise wrong_type("input", "a string or an array of input items", value)
    messages: list[dict[str, Any]] = []
    for i, raw in enumerate(value):
        param = f"input[{i}]"
        item = mapping(raw, param)
        kind = item.get("type", "message")
        if kind == "reasoning":
            continue  # our own earlier output passed back; templates drop past reasoning anyway
        if kind != "message":
            raise unsupported(f"{param}.type", f"input items of type {kind!r} are not available in the text profile.")
        role = item.get("role")
        if role not in _ITEM_ROLES:
            raise InvalidRequest(f"Invalid value for '{param}.role': {role!r}. Supported values are: 'user', "
                                 f"'assistant', 'system' and 'developer'.", param=f"{param}.role")
        content = item.get("content")
        if content is None:
            raise InvalidRequest(f"Missing required parameter: '{param}.content'.", param=f"{param}.content")
        text, _ = content_parts(content, f"{param}.content", images_ok=False, target=None)
        messages.append({"role": ROLES[role], "content": text})
    if not messages:
        raise InvalidRequest("Invalid 'input': no message items.", param="input")
    return messages


def _text_config(body: Mapping[str, Any]) -> tuple[dict[str, Any], str | dict[str, Any] | None]:
    """(the `text` object to echo, Ollama `format`)."""
    text = body.get("text")
    if text is None:
        return {"format": {"type": "text"}}, None
    text = mapping(text, "text")
    verbosity = choice(text, "verbosity", ("low", "medium", "high"), param="text.verbosity")
    if verbosity not in (None, "medium"):
        raise unsupported("text.verbosity", "the model's verbosity cannot be steered.")
    spec = text.get("format")
    fmt = json_format(spec, "text.format", nested=False)
    if isinstance(fmt, dict):
        name = mapping(spec, "text.format").get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("Missing required parameter: 'text.format.name'.", param="text.format.name")
    echo: dict[str, Any] = {"format": dict(spec) if spec is not None else {"type": "text"}}
    if verbosity is not None:
        echo["verbosity"] = verbosity
    return echo, fmt


def prepare(body: Mapping[str, Any], target: ModelTarget) -> PreparedRequest:
    """Validate a Responses API request (text profile) and build the /api/chat body."""
    require_kind(target, "chat", "responses")
    family = get_family(target.family)
    _refuse_unsupported(body)
    stream, _ = stream_flags(body, usage_option=False)
    messages = _input_messages(body)
    instructions = string(body, "instructions")
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    max_tokens = integer(body, "max_output_tokens", lo=1)
    sampling = sampling_options(body, penalties=False, seed=False, stop=False)
    options = {**base_options(family, target), **sampling}
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    reasoning = body.get("reasoning")
    effort = None
    if reasoning is not None:
        reasoning = mapping(reasoning, "reasoning")
        effort = reasoning.get("effort")
        choice(reasoning, "summary", ("auto", "concise", "detailed"), param="reasoning.summary")
    text_echo, fmt = _text_config(body)
    native = chat_body(target, messages, stream, options, think=think_value(effort, target, family, "reasoning.effort"),
                       fmt=fmt)
    size = measure_messages(messages)
    check_context(size.typical(), max_tokens, target.context, "input")
    echo = {
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "temperature": sampling.get("temperature"),
        "top_p": sampling.get("top_p"),
        "reasoning": {"effort": effort, "summary": reasoning.get("summary")} if reasoning is not None else None,
        "text": text_echo,
        "tool_choice": body.get("tool_choice") or "auto",
        "metadata": dict(body.get("metadata") or {}),
    }
    return PreparedRequest(endpoint="responses", ollama_path="/api/chat", body=native, stream=stream,
                           prompt_tokens_estimate=size.estimate(), max_output_tokens=max_tokens,
                           include_usage=True, meta=echo)


# --- answer -------------------------------------------------------------------------------------


def _suffix(response_id: str) -> str:
    return response_id.removeprefix("resp_")


def _response(prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int, status: str,
              output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": incomplete,
        "model": target.public_name,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": False,
        "tools": [],
        "truncation": "disabled",
        "usage": usage,
        **prepared.meta,
    }


def _reasoning_item(response_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": "rs_" + _suffix(response_id), "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": status}


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(response_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": "msg_" + _suffix(response_id), "type": "message", "status": status, "role": "assistant",
            "content": content}


def _usage_json(usage: Usage, reader: OutputReader, final: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens(final), "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": reader.reasoning_tokens(usage.output_tokens)},
        "total_tokens": usage.total_tokens,
    }


def _status(final: Mapping[str, Any] | None) -> str:
    return "incomplete" if final is not None and final.get("done_reason") == "length" else "completed"


def render(prepared: PreparedRequest, target: ModelTarget, ollama: Mapping[str, Any], response_id: str,
           created: int) -> tuple[dict[str, Any], Usage]:
    """Ollama's /api/chat answer -> a `response` object."""
    message = ollama.get("message")
    reader = OutputReader(get_family(target.family).think_tags)
    thinking, text = reader.read(message) if isinstance(message, Mapping) else ("", "")
    tail_thinking, tail_text = reader.flush()
    thinking += tail_thinking
    text += tail_text
    status = _status(ollama)
    output = [_reasoning_item(response_id, thinking, "completed")] if thinking else []
    output.append(_message_item(response_id, text, status))
    usage = reader.usage(ollama, prepared.prompt_tokens_estimate)
    return _response(prepared, target, response_id, created, status, output,
                     _usage_json(usage, reader, ollama)), usage


# --- streaming ----------------------------------------------------------------------------------

_NONE, _REASONING, _MESSAGE = range(3)


class ResponsesStreamEncoder:
    """Ollama chunks -> Responses API events (`event: <type>` frames with increasing sequence_number)."""

    __slots__ = ("_prepared", "_target", "_id", "_created", "_reader", "_final", "_seq", "_phase", "_output",
                 "_reasoning", "_text", "_delta", "_started", "_closed")

    def __init__(self, prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int) -> None:
        self._prepared = prepared
        self._target = target
        self._id = response_id
        self._created = created
        self._reader = OutputReader(get_family(target.family).think_tags)
        self._final: Mapping[str, Any] | None = None
        self._seq = 0
        self._phase = _NONE
        self._output: list[dict[str, Any]] = []  # items already done
        self._reasoning: list[str] = []
        self._text: list[str] = []
        self._delta: FrameTemplate | None = None
        self._started = False
        self._closed = False

    @property
    def started(self) -> bool:
        return self._started

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        payload["type"] = kind
        payload["sequence_number"] = self._seq
        self._seq += 1
        return event_frame(kind, payload)

    def _snapshot(self, status: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
        return _response(self._prepared, self._target, self._id, self._created, status, list(self._output), usage)

    def _open(self) -> list[bytes]:
        self._started = True
        return [self._event("response.created", {"response": self._snapshot("in_progress")}),
                self._event("response.in_progress", {"response": self._snapshot("in_progress")})]

    def _delta_template(self, kind: str, item_id: str) -> FrameTemplate:
        payload: dict[str, Any] = {"type": kind, "item_id": item_id, "output_index": len(self._output),
                                   "content_index": 0, "delta": SLOT}
        if kind == "response.output_text.delta":
            payload["logprobs"] = []
        payload["sequence_number"] = SLOT
        return FrameTemplate(payload, event=kind)

    def _open_item(self, item: dict[str, Any], part: dict[str, Any], delta_kind: str) -> list[bytes]:
        index = len(self._output)
        self._delta = self._delta_template(delta_kind, item["id"])
        return [self._event("response.output_item.added", {"output_index": index, "item": item}),
                self._event("response.content_part.added", {"item_id": item["id"], "output_index": index,
                                                            "content_index": 0, "part": part})]

    def _close_reasoning(self) -> list[bytes]:
        text = "".join(self._reasoning)
        item = _reasoning_item(self._id, text, "completed")
        index = len(self._output)
        frames = [
            self._event("response.reasoning_text.done", {"item_id": item["id"], "output_index": index,
                                                         "content_index": 0, "text": text}),
            self._event("response.content_part.done", {"item_id": item["id"], "output_index": index,
                                                       "content_index": 0, "part": item["content"][0]}),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]
        self._output.append(item)
        return frames

    def _close_message(self, status: str) -> list[bytes]:
        text = "".join(self._text)
        item = _message_item(self._id, text, status)
        index = len(self._output)
        frames = [
            self._event("response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                      "content_index": 0, "text": text, "logprobs": []}),
            self._event("response.content_part.done", {"item_id": item["id"], "output_index": index,
                                                       "content_index": 0, "part": item["content"][0]}),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]
        self._output.append(item)
        return frames

    def _render_delta(self, text: str) -> bytes:
        assert self._delta is not None
        frame = self._delta.render(orjson.dumps(text), str(self._seq).encode())
        self._seq += 1
        return frame

    def _relay(self, thinking: str, text: str) -> list[bytes]:
        frames: list[bytes] = []
        if thinking and self._phase != _MESSAGE:
            # Reasoning after the answer has begun (not seen in practice) is paid for but not relayed:
            # the reasoning item is already closed.
            if self._phase == _NONE:
                self._phase = _REASONING
                frames += self._open_item(_reasoning_item(self._id, "", "in_progress") | {"content": []},
                                          {"type": "reasoning_text", "text": ""}, "response.reasoning_text.delta")
            self._reasoning.append(thinking)
            frames.append(self._render_delta(thinking))
        if text:
            if self._phase != _MESSAGE:
                frames += self._start_message()
            self._text.append(text)
            frames.append(self._render_delta(text))
        return frames

    def _start_message(self) -> list[bytes]:
        frames = self._close_reasoning() if self._phase == _REASONING else []
        self._phase = _MESSAGE
        return frames + self._open_item(_message_item(self._id, None, "in_progress"), _text_part(""),
                                        "response.output_text.delta")

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One Ollama chunk -> Responses events."""
        if self._closed:
            return b""
        frames = [] if self._started else self._open()
        message = chunk.get("message")
        if isinstance(message, Mapping):
            frames += self._relay(*self._reader.read(message))
        if chunk.get("done"):
            self._final = chunk
            frames += self._relay(*self._reader.flush())
        return b"".join(frames)

    def finish(self) -> bytes:
        """Close the open items, then response.completed (or response.incomplete when cut at the limit)."""
        if self._closed:
            return b""
        frames = [] if self._started else self._open()
        if self._final is None:
            frames += self._relay(*self._reader.flush())
        if self._phase != _MESSAGE:
            frames += self._start_message()
        status = _status(self._final)
        frames += self._close_message(status)
        self._closed = True
        usage = self.usage()
        response = self._snapshot(status, _usage_json(usage, self._reader, self._final))
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        frames.append(self._event(kind, {"response": response}))
        return b"".join(frames)

    def fail(self, code: str, message: str, *, error_type: str | None = None) -> bytes:
        """An `error` event, then `response.failed`; the stream ends there."""
        if self._closed:
            return b""
        frames = [] if self._started else self._open()
        self._closed = True
        frames.append(self._event("error", {"code": code, "message": message, "param": None}))
        response = self._snapshot("failed")
        response["error"] = {"code": "server_error", "message": message}
        frames.append(self._event("response.failed", {"response": response}))
        return b"".join(frames)

    def usage(self) -> Usage:
        """Ollama's counts if the done chunk came, else an estimate of what was relayed."""
        return self._reader.usage(self._final, self._prepared.prompt_tokens_estimate)


def encoder(prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int) -> ResponsesStreamEncoder:
    """A stream encoder for one Responses API answer."""
    return ResponsesStreamEncoder(prepared, target, response_id, created)
