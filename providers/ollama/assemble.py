"""Assemble Ollama's streamed NDJSON lines into the object its non-streaming answer would be.

The gateway asks Ollama for a stream even when the client did not: a non-streaming Ollama answer
sends its first byte only when the whole generation is done, so a long answer would hit the
first-byte timeout; a stream is watched by the per-chunk idle timeout instead. Streaming also lets
the gateway count what was generated when the client gives up halfway.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.errors import UpstreamProtocolError
from providers.tokens import estimate_output_tokens

_TEXT_FIELDS = ("content", "thinking")  # /api/chat: message.<field>
_GENERATE_FIELDS = ("response", "thinking")  # /api/generate: top-level <field>


class StreamAssembler:
    """Feed every streamed line; `merged()` is the non-streaming answer (chat or generate)."""

    def __init__(self) -> None:
        self._texts: dict[str, list[str]] = {}
        self._message_texts: dict[str, list[str]] = {}
        self._tool_calls: list[Any] = []
        self._logprobs: list[Any] = []  # Ollama sends each line's token logprobs with that line
        self._final: dict[str, Any] | None = None
        self.pieces = 0  # lines that carried generated text or tool calls
        self.nbytes = 0  # UTF-8 bytes of generated text

    def feed(self, chunk: Mapping[str, Any]) -> None:
        """One NDJSON object of the stream."""
        generated = False
        message = chunk.get("message")
        if isinstance(message, Mapping):
            for name in _TEXT_FIELDS:
                generated |= self._keep(self._message_texts, name, message.get(name))
            calls = message.get("tool_calls")
            if isinstance(calls, list) and calls:
                self._tool_calls.extend(calls)
                generated = True
        for name in _GENERATE_FIELDS:
            generated |= self._keep(self._texts, name, chunk.get(name))
        logprobs = chunk.get("logprobs")
        if isinstance(logprobs, list):
            self._logprobs.extend(logprobs)
        if generated:
            self.pieces += 1
        if chunk.get("done") is True:
            self._final = dict(chunk)

    def _keep(self, texts: dict[str, list[str]], name: str, value: Any) -> bool:
        if not isinstance(value, str) or not value:
            return False
        texts.setdefault(name, []).append(value)
        self.nbytes += len(value.encode())
        return True

    @property
    def done(self) -> bool:
        return self._final is not None

    def output_tokens_estimate(self) -> int:
        """Tokens generated so far, counted from the lines seen (Ollama streams about one per line)."""
        return estimate_output_tokens(self.nbytes, self.pieces)

    def merged(self) -> dict[str, Any]:
        """The answer as `stream: false` would have sent it; UpstreamProtocolError before the done line."""
        if self._final is None:
            raise UpstreamProtocolError("upstream stream ended before its final line")
        answer = dict(self._final)
        if self._logprobs:
            answer["logprobs"] = self._logprobs
        if "message" in answer or self._message_texts or self._tool_calls:
            final_message = answer.get("message")
            message: dict[str, Any] = dict(final_message) if isinstance(final_message, Mapping) else {}
            message.setdefault("role", "assistant")
            for name in _TEXT_FIELDS:
                text = "".join(self._message_texts.get(name, ()))
                if text or name == "content":
                    message[name] = text
            if self._tool_calls:
                message["tool_calls"] = list(self._tool_calls)
            answer["message"] = message
        for name, pieces in self._texts.items():
            answer[name] = "".join(pieces)
        return answer
