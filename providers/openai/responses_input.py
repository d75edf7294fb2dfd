"""Responses API `input` items, `tools` and `tool_choice` -> their Chat Completions equivalents.

The Responses API carries the same conversation as Chat Completions in another shape; turning it
into chat `messages` and chat `tools` lets one validator and one translator (messages.py, tools.py)
serve both. Error parameters are given back in Responses terms (`input[3].content[0]`).

    {"type": "message", "role", "content"}        -> a message (input_text/output_text/input_image parts)
    {"type": "function_call", "call_id", "name", "arguments"}
                                                  -> a tool call of an assistant message (consecutive calls,
                                                     and a directly preceding assistant message, share one)
    {"type": "function_call_output", "call_id", "output"}
                                                  -> a `tool` message
    {"type": "reasoning", "content"/"summary"}    -> `reasoning_content` of the next assistant message
    {"type": "function", "name", "parameters"} tool -> {"type": "function", "function": {...}}

Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from providers.errors import InvalidRequest
from providers.openai.params import mapping, unsupported, wrong_type

_ITEM_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
_MESSAGES_PARAM = re.compile(r"^messages\[(\d+)\]")


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)


def _parts(content: Any, param: str) -> Any:
    """Responses content parts -> chat content parts (input_image -> image_url); strings pass."""
    if not isinstance(content, list):
        return content
    out: list[dict[str, Any]] = []
    for j, raw in enumerate(content):
        part = mapping(raw, f"{param}[{j}]")
        kind = part.get("type")
        if kind == "input_image":
            url = part.get("image_url")
            if url is None:
                if part.get("file_id") is not None:
                    raise unsupported(f"{param}[{j}].file_id", "uploaded files are not stored here; send the image "
                                                              "inline as a base64 data URL in 'image_url'.")
                raise _missing(f"{param}[{j}].image_url")
            out.append({"type": "image_url", "image_url": {"url": url}})
        elif kind in _TEXT_PARTS:
            out.append({"type": "text", "text": part.get("text") if kind != "refusal" else part.get("refusal")})
        elif kind is None:
            raise _missing(f"{param}[{j}].type")
        else:
            raise unsupported(f"{param}[{j}].type", f"content parts of type {kind!r} are not available.")
    return out


def _reasoning_text(item: Mapping[str, Any]) -> str:
    texts = []
    for key in ("content", "summary"):
        for part in item.get(key) or ():
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        if texts:
            break
    if not texts and isinstance(item.get("encrypted_content"), str):
        # Ours is the plain reasoning text (nothing to hide it from: the client's own model's thoughts).
        texts.append(item["encrypted_content"])
    return "\n".join(texts)


def chat_messages(value: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """`input` -> (chat messages, the input param each message came from)."""
    if value is None:
        raise _missing("input")
    if isinstance(value, str):
        return [{"role": "user", "content": value}], ["input"]
    if not isinstance(value, list):
        raise wrong_type("input", "a string or an array of input items", value)
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    reasoning: list[str] = []
    for i, raw in enumerate(value):
        param = f"input[{i}]"
        item = mapping(raw, param)
        kind = item.get("type", "message")
        if kind == "reasoning":
            text = _reasoning_text(item)
            if text:
                reasoning.append(text)
            continue
        if kind == "message":
            role = item.get("role")
            if role not in _ITEM_ROLES:
                raise InvalidRequest(f"Invalid value for '{param}.role': {role!r}. Supported values are: 'user', "
                                     f"'assistant', 'system' and 'developer'.", param=f"{param}.role")
            if item.get("content") is None:
                raise _missing(f"{param}.content")
            message: dict[str, Any] = {"role": role, "content": _parts(item["content"], f"{param}.content")}
            if role == "assistant" and reasoning:
                message["reasoning_content"], reasoning = "\n".join(reasoning), []
            messages.append(message)
            origins.append(param)
        elif kind == "function_call":
            call = _function_call(item, param)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not reasoning:
                last.setdefault("tool_calls", []).append(call)
            else:
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                if reasoning:
                    message["reasoning_content"], reasoning = "\n".join(reasoning), []
                messages.append(message)
                origins.append(param)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise wrong_type(f"{param}.call_id", "a non-empty string", call_id)
            output = item.get("output")
            if output is None:
                raise _missing(f"{param}.output")
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _parts(output, f"{param}.output")})
            origins.append(param)
        else:
            raise unsupported(f"{param}.type", f"input items of type {kind!r} are not available.")
    if not messages:
        raise InvalidRequest("Invalid 'input': no message items.", param="input")
    return messages, origins


def _function_call(item: Mapping[str, Any], param: str) -> dict[str, Any]:
    for key in ("call_id", "name"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise wrong_type(f"{param}.{key}", "a non-empty string", item.get(key))
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise wrong_type(f"{param}.arguments", "a string", arguments)
    return {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": arguments}}


def input_param(error: InvalidRequest, origins: list[str]) -> InvalidRequest:
    """An error about chat `messages[k]...` renamed to the Responses input item it came from."""
    param = error.param or ""
    match = _MESSAGES_PARAM.match(param)
    if match is None or int(match[1]) >= len(origins):
        return error
    renamed = origins[int(match[1])] + param[match.end():]
    renamed = renamed.replace(".tool_calls[0].function.arguments", ".arguments").replace(".tool_call_id", ".call_id")
    message = error.message.replace(param, renamed)
    return InvalidRequest(message, param=renamed, code=error.code)


def chat_tools(body: Mapping[str, Any]) -> dict[str, Any]:
    """Responses `tools`, `tool_choice` and `parallel_tool_calls` as a Chat Completions body fragment."""
    out: dict[str, Any] = {}
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise wrong_type("tools", "an array", tools)
        converted = []
        for i, raw in enumerate(tools):
            tool = mapping(raw, f"tools[{i}]")
            kind = tool.get("type")
            if kind != "function":
                raise unsupported(f"tools[{i}].type", f"only 'function' tools are available, not {kind!r} (hosted "
                                                      "tools such as web or file search need OpenAI's servers).")
            function = {key: tool[key] for key in ("name", "description", "parameters") if tool.get(key) is not None}
            converted.append({"type": "function", "function": function})
        out["tools"] = converted
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind != "function":
            raise unsupported("tool_choice.type", f"only a named 'function' can be chosen, not {kind!r}.")
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    if body.get("parallel_tool_calls") is not None:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    return out
