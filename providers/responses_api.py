"""/v1/responses <-> /api/chat.

Supported: `input` as a string or as items — messages (roles user/assistant/system/developer, text
and `input_image` parts), `function_call` and `function_call_output` items, `reasoning` items
(passed back as the next assistant turn's thinking) — `instructions` (a leading system message),
function `tools`, `tool_choice` (forced calls through structured output, as on Chat Completions),
`parallel_tool_calls`, `max_output_tokens`, `temperature`, `top_p`, `text.format` (text /
json_object / json_schema), `reasoning.effort`, `stream`. Refused with a 400 naming the
parameter: hosted tools, `previous_response_id`, `conversation`, `background`, `store: true`
(nothing is kept), `prompt` templates, file/audio inputs, `include` other than
`reasoning.encrypted_content` and `message.output_text.logprobs` (logprobs as on Chat
Completions). Input items become Chat Completions messages first (responses_input.py), so both
APIs share one validator.

A thinking model's reasoning comes out as a `reasoning` output item whose content is the full
`reasoning_text` (there is no summariser), before the `message` item; tool calls come out as
`function_call` items after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import ModelTarget, PreparedRequest, Usage
from providers.errors import InvalidRequest
from providers.families import get_family
from providers.openai.forced_call import ForcedCall
from providers.openai.logprobs import MAX_TOP_LOGPROBS, content_logprobs, request_logprobs
from providers.openai.messages import translate_messages
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
from providers.openai.responses_input import chat_messages, chat_tools, input_param
from providers.openai.tools import ToolRequest, translate_tools
from providers.sse import SLOT, FrameTemplate, event_frame
from providers.tokens import measure_messages

_INCLUDE_OK = ("reasoning.encrypted_content", "message.output_text.logprobs")
_LOGPROBS_INCLUDE = "message.output_text.logprobs"


# --- request ------------------------------------------------------------------------------------


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    refuse_if(body, "previous_response_id", (), "responses are not stored; send the whole conversation as input.")
    refuse_if(body, "conversation", (), "conversations are not stored; send the whole conversation as input.")
    refuse_if(body, "background", (False,), "background responses are not available.")
    refuse_if(body, "store", (False,), "responses are not stored; omit 'store' or set it to false.")
    refuse_if(body, "prompt", (), "stored prompt templates are not available.")
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


def _logprobs(body: Mapping[str, Any], target: ModelTarget) -> dict[str, Any]:
    """`include: ["message.output_text.logprobs"]` and/or `top_logprobs` -> Ollama's fields (as for chat)."""
    include = body.get("include") or ()
    top = integer(body, "top_logprobs", lo=0, hi=MAX_TOP_LOGPROBS)
    if _LOGPROBS_INCLUDE not in include and not top:
        return {}
    try:
        return request_logprobs({"logprobs": True, "top_logprobs": top}, target)
    except InvalidRequest as error:  # named as the Responses API spells it
        param = "top_logprobs" if top else "include"
        raise InvalidRequest(error.message.replace("'logprobs'", f"'{param}'"), param=param) from None


def _tools(body: Mapping[str, Any], target: ModelTarget) -> ToolRequest:
    try:
        return translate_tools(chat_tools(body), target)
    except InvalidRequest as error:  # name the parameter as the Responses API spells it
        param = (error.param or "").replace(".function.", ".").replace("tool_choice.function.", "tool_choice.")
        raise InvalidRequest(error.message.replace(error.param or "\x00", param), param=param or None,
                             code=error.code) from None


def prepare(body: Mapping[str, Any], target: ModelTarget) -> PreparedRequest:
    """Validate a Responses API request and build the /api/chat body."""
    require_kind(target, "chat", "responses")
    family = get_family(target.family)
    _refuse_unsupported(body)
    stream, _ = stream_flags(body, usage_option=False)
    chat_input, origins = chat_messages(body.get("input"))
    try:
        messages = translate_messages(chat_input, target)
    except InvalidRequest as error:
        raise input_param(error, origins) from None
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
    offered = _tools(body, target)
    if offered.forced is not None:
        if fmt is not None:
            raise unsupported("text.format", "a JSON output format cannot be combined with a forced tool call "
                                             "(tool_choice 'required' or a named function): both need the model "
                                             "server's structured output.")
        fmt = offered.forced.schema()
    native = chat_body(target, messages, stream, options, think=think_value(effort, target, family, "reasoning.effort"),
                       fmt=fmt, tools=offered.tools)
    native.update(_logprobs(body, target))
    size = measure_messages(messages, offered.tools)
    check_context(size.typical(), max_tokens, target.context, "input")
    echo = {
        "instructions": instructions,
        "max_output_tokens": max_tokens,
        "temperature": sampling.get("temperature"),
        "top_p": sampling.get("top_p"),
        "reasoning": {"effort": effort, "summary": reasoning.get("summary")} if reasoning is not None else None,
        "text": text_echo,
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [dict(tool) for tool in body.get("tools") or ()],
        "parallel_tool_calls": not offered.single,
        "metadata": dict(body.get("metadata") or {}),
    }
    return PreparedRequest(endpoint="responses", ollama_path="/api/chat", body=native, stream=stream,
                           prompt_tokens_estimate=size.estimate(), max_output_tokens=max_tokens,
                           include_usage=True,
                           meta={"echo": echo, "forced_call": offered.forced, "single_call": offered.single,
                                 "logprobs": bool(native.get("logprobs")),
                                 "encrypted": "reasoning.encrypted_content" in (body.get("include") or ())})


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
        "previous_response_id": None,
        "store": False,
        "truncation": "disabled",
        "usage": usage,
        **prepared.meta["echo"],
    }


def _reasoning_item(response_id: str, text: str, status: str, encrypted: bool = False) -> dict[str, Any]:
    """The reasoning output item; with `include: ["reasoning.encrypted_content"]` the text also rides in
    `encrypted_content` (not encrypted: clients that replay only that field keep the thread), as Ollama does."""
    item = {"id": "rs_" + _suffix(response_id), "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": status}
    if encrypted:
        item["encrypted_content"] = text
    return item


def _text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def _message_item(response_id: str, text: str | None, status: str,
                  logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text, logprobs)]
    return {"id": "msg_" + _suffix(response_id), "type": "message", "status": status, "role": "assistant",
            "content": content}


def _call_item(response_id: str, index: int, call: Mapping[str, Any], status: str) -> dict[str, Any]:
    """A `function_call` output item for an OpenAI-shaped call (`OutputReader.tool_calls`)."""
    function = call["function"]
    return {"id": f"fc_{_suffix(response_id)}_{index}", "type": "function_call", "status": status,
            "call_id": call["id"], "name": function["name"],
            "arguments": function["arguments"] if status == "completed" else ""}


def _answer_calls(prepared: PreparedRequest, reader: OutputReader, message: Mapping[str, Any], text: str,
                  final: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], str]:
    """The answer's tool calls (native, or the forced call read from its JSON text) and the text left."""
    calls = reader.tool_calls(message["tool_calls"]) if message.get("tool_calls") else []
    forced: ForcedCall | None = prepared.meta.get("forced_call")
    if forced is not None and not calls and text:
        calls = forced.calls(text, truncated=final is not None and final.get("done_reason") == "length")
        if calls:
            text = ""
    if prepared.meta.get("single_call"):
        calls = calls[:1]
    return calls, text


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
    calls, text = _answer_calls(prepared, reader, message if isinstance(message, Mapping) else {}, text, ollama)
    status = _status(ollama) if not calls else "completed"
    output = [_reasoning_item(response_id, thinking, "completed", prepared.meta.get("encrypted", False))] \
        if thinking else []
    if text or not calls:
        logprobs = content_logprobs(ollama.get("logprobs")) if prepared.meta.get("logprobs") else None
        output.append(_message_item(response_id, text, status, logprobs))
    output += [_call_item(response_id, n, call, "completed") for n, call in enumerate(calls)]
    usage = reader.usage(ollama, prepared.prompt_tokens_estimate)
    return _response(prepared, target, response_id, created, status, output,
                     _usage_json(usage, reader, ollama)), usage


# --- streaming ----------------------------------------------------------------------------------

_NONE, _REASONING, _MESSAGE, _CALLS = range(4)


class ResponsesStreamEncoder:
    """Ollama chunks -> Responses API events (`event: <type>` frames with increasing sequence_number)."""

    __slots__ = ("_prepared", "_target", "_id", "_created", "_reader", "_final", "_seq", "_phase", "_output",
                 "_reasoning", "_text", "_delta", "_started", "_closed", "_calls", "_forced", "_held", "_single",
                 "_logprobs", "_chunk_logprobs")

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
        self._calls = 0
        # A forced call arrives as JSON text: held back, then sent as one function_call item.
        self._forced: ForcedCall | None = prepared.meta.get("forced_call")
        self._held: list[str] = []
        self._single = bool(prepared.meta.get("single_call"))
        self._logprobs: list[dict[str, Any]] | None = [] if prepared.meta.get("logprobs") else None
        self._chunk_logprobs: Any = None

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
        item = _reasoning_item(self._id, text, "completed", self._prepared.meta.get("encrypted", False))
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
        item = _message_item(self._id, text, status, self._logprobs)
        index = len(self._output)
        frames = [
            self._event("response.output_text.done", {"item_id": item["id"], "output_index": index,
                                                      "content_index": 0, "text": text,
                                                      "logprobs": self._logprobs or []}),
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
        if self._forced is not None and text:
            self._held.append(text)
            text = ""
        if thinking and self._phase in (_NONE, _REASONING):
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
            if self._logprobs is not None:  # rare path (logprobs asked): the delta carries the chunk's logprobs
                pieces = content_logprobs(self._chunk_logprobs)
                self._logprobs += pieces
                frames.append(self._event("response.output_text.delta", {
                    "item_id": "msg_" + _suffix(self._id), "output_index": len(self._output), "content_index": 0,
                    "delta": text, "logprobs": pieces}))
            else:
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
        self._chunk_logprobs = chunk.get("logprobs")
        if isinstance(message, Mapping):
            frames += self._relay(*self._reader.read(message))
            if message.get("tool_calls"):
                frames += self._emit_calls(self._reader.tool_calls(message["tool_calls"]))
        if chunk.get("done"):
            self._final = chunk
            frames += self._relay(*self._reader.flush())
            frames += self._release_held()
        return b"".join(frames)

    def _release_held(self) -> list[bytes]:
        if self._forced is None or not self._held:
            return []
        text, self._held = "".join(self._held), []
        if self._calls:
            return []
        truncated = self._final is not None and self._final.get("done_reason") == "length"
        calls = self._forced.calls(text, truncated=truncated)
        if calls:
            return self._emit_calls(calls)
        self._forced = None  # cut off before a call could be read: the text is the answer
        return self._relay("", text)

    def _emit_calls(self, calls: list[dict[str, Any]]) -> list[bytes]:
        """Close the open item, then per call: output_item.added, function_call_arguments.delta/.done,
        output_item.done."""
        if self._single:
            calls = calls[: max(0, 1 - self._calls)]  # parallel_tool_calls: false -> the first call only
        if not calls:
            return []
        frames: list[bytes] = []
        if self._phase == _REASONING:
            frames += self._close_reasoning()
        elif self._phase == _MESSAGE:
            frames += self._close_message("completed")
        self._phase = _CALLS
        for call in calls:
            index = len(self._output)
            item = _call_item(self._id, self._calls, call, "completed")
            self._calls += 1
            ref = {"item_id": item["id"], "output_index": index}
            frames += [
                self._event("response.output_item.added",
                            {"output_index": index, "item": {**item, "arguments": "", "status": "in_progress"}}),
                self._event("response.function_call_arguments.delta", {**ref, "delta": item["arguments"]}),
                self._event("response.function_call_arguments.done",
                            {**ref, "name": item["name"], "arguments": item["arguments"]}),
                self._event("response.output_item.done", {"output_index": index, "item": item}),
            ]
            self._output.append(item)
        return frames

    def finish(self) -> bytes:
        """Close the open items, then response.completed (or response.incomplete when cut at the limit)."""
        if self._closed:
            return b""
        frames = [] if self._started else self._open()
        if self._final is None:
            frames += self._relay(*self._reader.flush())
            frames += self._release_held()
        status = _status(self._final) if not self._calls else "completed"
        if self._phase in (_NONE, _REASONING) and not self._calls:
            frames += self._start_message()
        if self._phase == _MESSAGE:
            frames += self._close_message(status)
        elif self._phase == _REASONING:
            frames += self._close_reasoning()
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
