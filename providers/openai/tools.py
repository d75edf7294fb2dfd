"""OpenAI `tools` / `tool_choice` / `parallel_tool_calls` -> Ollama `tools` (+ `format` when forced).

"none" sends no tools; "auto" sends them all. Ollama has no `tool_choice`, so a forced call
("required", or a named function) is enforced with structured output: `format` is a JSON schema
of the allowed call(s), and the JSON the model writes is returned as a real tool call (see
`providers/openai/forced_call.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.base import ModelTarget
from providers.errors import InvalidRequest
from providers.openai.forced_call import ForcedCall
from providers.openai.params import boolean, mapping, unsupported, wrong_type

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _tool(raw: Any, param: str) -> dict[str, Any]:
    tool = mapping(raw, param)
    kind = tool.get("type")
    if kind != "function":
        raise unsupported(f"{param}.type", f"only 'function' tools are supported, not {kind!r}.")
    function = tool.get("function")
    if function is None:
        raise InvalidRequest(f"Missing required parameter: '{param}.function'.", param=f"{param}.function")
    function = mapping(function, f"{param}.function")
    name = function.get("name")
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise InvalidRequest(f"Invalid '{param}.function.name': {name!r} does not match '^[a-zA-Z0-9_-]{{1,64}}$'.",
                             param=f"{param}.function.name")
    native: dict[str, Any] = {"name": name}
    description = function.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise wrong_type(f"{param}.function.description", "a string", description)
        native["description"] = description
    parameters = function.get("parameters")
    native["parameters"] = (dict(mapping(parameters, f"{param}.function.parameters"))
                            if parameters is not None else {"type": "object", "properties": {}})
    return {"type": "function", "function": native}


def _named_choice(choice: Mapping[str, Any]) -> str:
    kind = choice.get("type")
    if kind != "function":
        raise unsupported("tool_choice.type", f"only a named 'function' can be chosen, not {kind!r}.")
    function = mapping(choice.get("function"), "tool_choice.function")
    name = function.get("name")
    if not isinstance(name, str):
        raise wrong_type("tool_choice.function.name", "a string", name)
    return name


@dataclass(frozen=True)
class ToolRequest:
    """The request's tools as Ollama gets them, and how the answer's calls are to be shaped.

    `forced` names the tools a forced call may use (None: the model may answer in text);
    `single` is `parallel_tool_calls: false` (at most one call is returned).
    """

    tools: list[dict[str, Any]] | None
    forced: ForcedCall | None = None
    single: bool = False


def translate_tools(body: Mapping[str, Any], target: ModelTarget) -> ToolRequest:
    """Validate `tools`, `tool_choice` and `parallel_tool_calls`; raises InvalidRequest naming the field."""
    single = boolean(body, "parallel_tool_calls") is False
    tools = _offered(body, target)
    if not tools:
        return ToolRequest(None, None, single)
    choice = body.get("tool_choice")
    forced = ForcedCall(tools) if choice == "required" or isinstance(choice, Mapping) else None
    return ToolRequest(tools, forced, single)


def _offered(body: Mapping[str, Any], target: ModelTarget) -> list[dict[str, Any]] | None:
    raw_tools = body.get("tools")
    choice = body.get("tool_choice")
    if raw_tools is not None and not isinstance(raw_tools, list):
        raise wrong_type("tools", "an array", raw_tools)
    tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(raw_tools or ())]
    named: str | None = None
    if isinstance(choice, Mapping):
        named = _named_choice(choice)
    elif choice is not None and choice not in ("none", "auto", "required"):
        raise InvalidRequest(f"Invalid value for 'tool_choice': {choice!r}. Supported values are: 'none', 'auto', "
                             f"'required' or a named function.", param="tool_choice")
    if not tools:
        if named is not None or choice == "required":
            raise InvalidRequest("'tool_choice' requires 'tools' to be specified.", param="tool_choice")
        return None
    if choice == "none":
        return None
    if target.can("tools") is False:
        raise unsupported("tools", f"the model '{target.public_name}' cannot call tools.")
    if named is not None:
        tools = [t for t in tools if t["function"]["name"] == named]
        if not tools:
            raise InvalidRequest(f"Invalid 'tool_choice': no tool named {named!r} in 'tools'.",
                                 param="tool_choice")
    return tools
