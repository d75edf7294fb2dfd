"""Cheap token estimates, used where Ollama's counts are not (yet) known.

Two flavours, on purpose:
- `estimate_*` over-counts (UTF-8 bytes / 3): it sizes credit holds and prompt charges when
  Ollama sent no count, where under-counting would let an account go below zero.
- `typical_*` (bytes / 4, roughly English with common tokenizers) decides `context_length_exceeded`,
  where over-counting would refuse prompts that fit: the check must reject only what clearly does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

IMAGE_TOKENS = 768  # a flat charge per image: vision encoders spend hundreds of tokens on each
MESSAGE_OVERHEAD = 4  # role markers and separators of a chat template, per message
REPLY_OVERHEAD = 3  # the assistant header the template opens the reply with


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def estimate_tokens(text: str) -> int:
    """A conservative (over-)estimate of the tokens in `text`: ceil(UTF-8 bytes / 3) + 1; 0 for ""."""
    if not text:
        return 0
    return _ceil_div(len(text.encode()), 3) + 1


def estimate_output_tokens(nbytes: int, pieces: int) -> int:
    """Tokens of generated text relayed as `pieces` chunks totalling `nbytes` bytes.

    Ollama streams about one token per chunk, so the chunk count is the better measure; bytes / 4
    guards against a server that packs several tokens into a chunk.
    """
    return max(pieces, _ceil_div(nbytes, 4))


@dataclass(frozen=True)
class PromptSize:
    """What a prompt weighs before tokenization: text bytes, images and chat messages."""

    text_bytes: int
    images: int = 0
    messages: int = 0

    def _fixed(self) -> int:
        turns = self.messages * MESSAGE_OVERHEAD + (REPLY_OVERHEAD if self.messages else 0)
        return turns + self.images * IMAGE_TOKENS

    def estimate(self) -> int:
        """Conservative token count (for holds and estimated charges)."""
        return _ceil_div(self.text_bytes, 3) + self._fixed() + 1

    def typical(self) -> int:
        """Central token count (for the context-length check)."""
        return _ceil_div(self.text_bytes, 4) + self._fixed()


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if value is None:
        return 0
    return len(orjson.dumps(value))


def measure_messages(messages: Iterable[Mapping[str, Any]], tools: Iterable[Any] | None = None) -> PromptSize:
    """Size of native Ollama chat messages (content, thinking, tool calls, images) plus tool schemas."""
    nbytes = 0
    images = 0
    count = 0
    for message in messages:
        count += 1
        nbytes += _text_bytes(message.get("content"))
        nbytes += _text_bytes(message.get("thinking"))
        nbytes += _text_bytes(message.get("tool_calls"))
        nbytes += _text_bytes(message.get("tool_name"))
        images += len(message.get("images") or ())
    if tools:
        nbytes += len(orjson.dumps(list(tools)))
    return PromptSize(nbytes, images, count)


def measure_texts(texts: Iterable[str]) -> PromptSize:
    """Size of plain prompts (legacy completions, embedding inputs)."""
    return PromptSize(sum(len(t.encode()) for t in texts))
