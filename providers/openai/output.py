"""Reading Ollama's generated output: thinking vs answer text, tool calls, and what it weighs.

Shared by every chat-shaped answer (Chat Completions and the Responses API), streaming or not.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import Usage
from providers.errors import UpstreamProtocolError
from providers.openai.think_tags import ThinkTagSplitter
from providers.tokens import estimate_output_tokens


def new_call_id() -> str:
    """A fresh tool-call id, for calls Ollama sent without one (servers before v0.12.10)."""
    return "call_" + uuid.uuid4().hex[:24]


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class OutputReader:
    """Splits one answer's messages into (thinking, content) and tallies what was generated."""

    __slots__ = ("_splitter", "text_bytes", "text_pieces", "reasoning_bytes", "reasoning_pieces")

    def __init__(self, think_tags: bool) -> None:
        self._splitter = ThinkTagSplitter() if think_tags else None
        self.text_bytes = 0
        self.text_pieces = 0
        self.reasoning_bytes = 0
        self.reasoning_pieces = 0

    def read(self, message: Mapping[str, Any]) -> tuple[str, str]:
        """(thinking, content) of one message or chunk, `<think>` tags split out when the family needs it."""
        thinking = message.get("thinking") or ""
        content = message.get("content") or ""
        if not isinstance(thinking, str) or not isinstance(content, str):
            raise UpstreamProtocolError("Ollama sent a message whose content or thinking is not a string")
        if self._splitter is not None and content:
            inline, content = self._splitter.feed(content)
            thinking += inline
        self._tally(thinking, content)
        return thinking, content

    def flush(self) -> tuple[str, str]:
        """Text the tag splitter held back, at the end of the answer."""
        if self._splitter is None:
            return "", ""
        thinking, content = self._splitter.flush()
        self._tally(thinking, content)
        return thinking, content

    def _tally(self, thinking: str, content: str) -> None:
        if thinking:
            self.reasoning_bytes += len(thinking.encode())
            self.reasoning_pieces += 1
        if content:
            self.text_bytes += len(content.encode())
            self.text_pieces += 1

    def tool_calls(self, calls: Any) -> list[dict[str, Any]]:
        """Ollama tool calls (arguments as objects) -> OpenAI ones (arguments as JSON strings, ids kept)."""
        if not isinstance(calls, list):
            raise UpstreamProtocolError("Ollama sent tool_calls that are not a list")
        out = []
        for call in calls:
            function = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise UpstreamProtocolError("Ollama sent a tool call without a function name")
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
            self.text_bytes += len(arguments) + len(function["name"])
            self.text_pieces += 1
            call_id = call.get("id")
            out.append({
                "id": call_id if isinstance(call_id, str) and call_id else new_call_id(),
                "type": "function",
                "function": {"name": function["name"], "arguments": arguments},
            })
        return out

    def usage(self, final: Mapping[str, Any] | None, prompt_estimate: int) -> Usage:
        """Ollama's counts from the final object when present, else our estimate (flagged)."""
        prompt = _count(final.get("prompt_eval_count")) if final is not None else None
        evals = _count(final.get("eval_count")) if final is not None else None
        generated = estimate_output_tokens(self.text_bytes + self.reasoning_bytes,
                                           self.text_pieces + self.reasoning_pieces)
        estimated = prompt is None
        if evals is None:
            # Ollama omits a zero count; a missing count after relayed output means it was lost.
            estimated = estimated or final is None or generated > 0
            evals = generated
        return Usage(prompt if prompt is not None else prompt_estimate, evals, estimated)

    def reasoning_tokens(self, output_tokens: int) -> int:
        """Our estimate of the thinking share of the output (Ollama does not count it apart)."""
        if not self.reasoning_bytes:
            return 0
        return min(output_tokens, estimate_output_tokens(self.reasoning_bytes, self.reasoning_pieces))


def finish_reason(done_reason: Any, tool_calls: bool) -> str:
    """Ollama's done_reason -> OpenAI's finish_reason (load/unload/missing -> stop)."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if tool_calls else "stop"


def cached_tokens(final: Mapping[str, Any] | None) -> int:
    """Prompt tokens served from Ollama's cache (newest servers only; 0 otherwise)."""
    if final is None:
        return 0
    return _count(final.get("prompt_eval_cached_count")) or 0
