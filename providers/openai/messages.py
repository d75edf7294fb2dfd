"""OpenAI chat messages -> Ollama's native messages (one native message per OpenAI message).

Content parts are merged into one message (texts joined by newlines, images collected), which
templates render better than Ollama's own one-message-per-part translation.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import ModelTarget
from providers.errors import InvalidRequest
from providers.openai.output import new_call_id
from providers.openai.params import mapping, unsupported, wrong_type

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
_DATA_URL = re.compile(r"data:(?:image/(?:png|jpeg|jpg|webp))?;base64,", re.IGNORECASE)
_TEXT_PARTS = ("text", "input_text", "output_text", "refusal")


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)


def image_data(url: Any, param: str) -> str:
    """A `data:image/...;base64,X` URL -> X (bare base64, as Ollama wants it)."""
    if not isinstance(url, str):
        raise wrong_type(param, "a string", url)
    if url[:8].lower().startswith(("http://", "https://")):
        raise InvalidRequest("Image URLs are not supported; send the image inline as a base64 "
                             "'data:image/<png|jpeg|webp>;base64,...' URL.", param=param)
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequest("Invalid image: expected a base64 'data:image/<png|jpeg|webp>;base64,...' URL.",
                             param=param)
    data = url[match.end():]
    if "\n" in data or "\r" in data:
        data = data.replace("\r", "").replace("\n", "")
    try:
        binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        raise InvalidRequest("Invalid image: the data URL is not valid base64.", param=param) from None
    if not data:
        raise InvalidRequest("Invalid image: the data URL is empty.", param=param)
    return data


def content_parts(value: Any, param: str, *, images_ok: bool,
                  target: ModelTarget | None) -> tuple[str, list[str]]:
    """A message's `content` (string or parts) -> (text, base64 images)."""
    if isinstance(value, str):
        return value, []
    if not isinstance(value, list):
        raise wrong_type(param, "a string or an array of content parts", value)
    texts: list[str] = []
    images: list[str] = []
    for j, raw in enumerate(value):
        where = f"{param}[{j}]"
        part = mapping(raw, where)
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            key = "refusal" if kind == "refusal" else "text"
            text = part.get(key)
            if not isinstance(text, str):
                raise wrong_type(f"{where}.{key}", "a string", text)
            texts.append(text)
        elif kind == "image_url" and images_ok:
            if target is not None and target.can("vision") is False:
                raise unsupported(where, f"the model '{target.public_name}' does not accept images.")
            spec = part.get("image_url")
            url = spec.get("url") if isinstance(spec, Mapping) else spec
            images.append(image_data(url, f"{where}.image_url"))
        elif kind is None:
            raise _missing(f"{where}.type")
        else:
            raise unsupported(f"{where}.type", f"content parts of type {kind!r} cannot be sent in this message.")
    return "\n".join(texts), images


def _assistant(message: Mapping[str, Any], param: str, calls_by_id: dict[str, str]) -> dict[str, Any]:
    native: dict[str, Any] = {"role": "assistant", "content": ""}
    calls = message.get("tool_calls")
    content = message.get("content")
    if content is not None:
        native["content"], _ = content_parts(content, f"{param}.content", images_ok=False, target=None)
    elif not calls:
        raise InvalidRequest(f"Invalid value for '{param}.content': an assistant message needs content "
                             f"or tool_calls.", param=f"{param}.content")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        native["thinking"] = reasoning
    if calls:
        if not isinstance(calls, list):
            raise wrong_type(f"{param}.tool_calls", "an array", calls)
        native["tool_calls"] = [_tool_call(call, f"{param}.tool_calls[{k}]", k, calls_by_id)
                                for k, call in enumerate(calls)]
    return native


def _tool_call(raw: Any, param: str, index: int, calls_by_id: dict[str, str]) -> dict[str, Any]:
    call = mapping(raw, param)
    kind = call.get("type", "function")
    if kind != "function":
        raise unsupported(f"{param}.type", f"only 'function' tool calls are supported, not {kind!r}.")
    function = call.get("function")
    if function is None:
        raise _missing(f"{param}.function")
    function = mapping(function, f"{param}.function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise wrong_type(f"{param}.function.name", "a non-empty string", name)
    arguments = function.get("arguments")
    where = f"{param}.function.arguments"
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"Invalid '{where}': not valid JSON.", param=where) from None
    elif arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise InvalidRequest(f"Invalid '{where}': the arguments must be a JSON object.", param=where)
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise wrong_type(f"{param}.id", "a string", call_id)
    call_id = call_id or new_call_id()
    calls_by_id[call_id] = name
    return {"id": call_id, "function": {"index": index, "name": name, "arguments": arguments}}


def _tool(message: Mapping[str, Any], param: str, calls_by_id: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if call_id is None:
        raise _missing(f"{param}.tool_call_id")
    if not isinstance(call_id, str):
        raise wrong_type(f"{param}.tool_call_id", "a string", call_id)
    name = calls_by_id.get(call_id) or message.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"Invalid '{param}.tool_call_id': {call_id!r} does not match any tool call of an "
                             f"earlier assistant message.", param=f"{param}.tool_call_id")
    content = message.get("content")
    if content is None:
        raise _missing(f"{param}.content")
    text, _ = content_parts(content, f"{param}.content", images_ok=False, target=None)
    return {"role": "tool", "content": text, "tool_call_id": call_id, "tool_name": name}


def translate_messages(messages: Any, target: ModelTarget) -> list[dict[str, Any]]:
    """Validate OpenAI `messages` and return Ollama's; tool results get the name of their call."""
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise wrong_type("messages", "an array", messages)
    if not messages:
        raise InvalidRequest("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                             param="messages")
    calls_by_id: dict[str, str] = {}
    native: list[dict[str, Any]] = []
    for i, raw in enumerate(messages):
        param = f"messages[{i}]"
        message = mapping(raw, param)
        role = message.get("role")
        if role is None:
            raise _missing(f"{param}.role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(f"Invalid value for '{param}.role': {role!r}. Supported values are: 'system', "
                                 f"'developer', 'user', 'assistant' and 'tool'.", param=f"{param}.role")
        if role == "assistant":
            native.append(_assistant(message, param, calls_by_id))
        elif role == "tool":
            native.append(_tool(message, param, calls_by_id))
        else:
            content = message.get("content")
            if content is None:
                raise _missing(f"{param}.content")
            text, images = content_parts(content, f"{param}.content", images_ok=role == "user", target=target)
            out: dict[str, Any] = {"role": ROLES[role], "content": text}
            if images:
                out["images"] = images
            native.append(out)
    return native
