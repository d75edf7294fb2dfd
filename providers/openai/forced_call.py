"""Forced tool calls (`tool_choice: "required"` or a named function) through Ollama's structured output.

Ollama has no `tool_choice`: offered tools are only a suggestion. To force a call we also send
`format`, a JSON schema the model's output must match, and read the JSON it writes as the call:

- one allowed tool (a named choice, or "required" with a single tool): the schema is the tool's
  `parameters`, and the whole output is the call's `arguments`;
- several ("required"): `anyOf` one `{"name": <const>, "arguments": <parameters>}` object per tool.

If the model emits a native tool call anyway (its template's own syntax), that call is used as is.
Pure functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from providers.errors import UpstreamProtocolError
from providers.openai.output import new_call_id


class ForcedCall:
    """The tools a forced call may use (already narrowed to the named one), and how to read the call."""

    __slots__ = ("tools",)

    def __init__(self, tools: Sequence[dict[str, Any]]) -> None:
        if not tools:
            raise ValueError("a forced call needs at least one tool")
        self.tools = tuple(tools)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(str(tool["function"]["name"]) for tool in self.tools)

    def schema(self) -> dict[str, Any]:
        """Ollama's `format` for the call: see the module docstring."""
        if len(self.tools) == 1:
            return dict(self.tools[0]["function"]["parameters"])
        return {"anyOf": [
            {"type": "object",
             "properties": {"name": {"type": "string", "const": tool["function"]["name"]},
                            "arguments": tool["function"]["parameters"]},
             "required": ["name", "arguments"]}
            for tool in self.tools
        ]}

    def calls(self, text: str, *, truncated: bool) -> list[dict[str, Any]]:
        """The OpenAI tool call the model's JSON output stands for (arguments as a JSON string).

        A cut-off output (`truncated`, Ollama's `done_reason: length`) is returned as far as it got,
        as OpenAI does, for one allowed tool; with several the tool cannot be known, so no call
        (the caller returns the text with `finish_reason: length`). Output that does not parse
        otherwise is the model server's fault: UpstreamProtocolError (502).
        """
        text = text.strip()
        if len(self.tools) == 1:
            if not truncated:
                _parse(text)
            return [_call(self.names[0], text or "{}")]
        try:
            value = _parse(text)
        except UpstreamProtocolError:
            if truncated:
                return []
            raise
        name = value.get("name")
        arguments = value.get("arguments")
        if name not in self.names or not isinstance(arguments, dict):
            raise UpstreamProtocolError("the model's forced tool call names no offered tool")
        return [_call(name, orjson.dumps(arguments).decode())]


def _parse(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("the model's forced tool call is not valid JSON") from None
    if not isinstance(value, dict):
        raise UpstreamProtocolError("the model's forced tool call is not a JSON object")
    return value


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}
