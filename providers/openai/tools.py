"""OpenAI `tools` / `tool_choice` -> Ollama `tools`.

Ollama cannot force a tool call, so `tool_choice` is honoured as far as the tool list goes:
"none" sends no tools, a named function sends only that tool, "required" sends them all. The model
may still answer in text in the last two cases; that is documented, not hidden.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from providers.errors import InvalidRequest
from providers.families import Family
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


def translate_tools(body: Mapping[str, Any], family: Family) -> list[dict[str, Any]] | None:
    """Validated Ollama tools for the request, or None when no tool is to be offered."""
    boolean(body, "parallel_tool_calls")  # accepted; Ollama decides how many calls a turn holds
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
    if not family.tools:
        raise unsupported("tools", f"models of the {family.name} family cannot call tools.")
    if named is not None:
        tools = [t for t in tools if t["function"]["name"] == named]
        if not tools:
            raise InvalidRequest(f"Invalid 'tool_choice': no tool named {named!r} in 'tools'.",
                                 param="tool_choice")
    return tools
