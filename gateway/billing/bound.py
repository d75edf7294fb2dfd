"""The most prompt tokens a native Ollama request can cost: what a credit hold must cover.

A hold that is below the real prompt lets a request cost more than was reserved (the account
charge would then be capped, and the key's monthly limit overrun). So the hold is sized from a
bound, not an estimate:

    bound = text bytes                       byte-level BPE and SentencePiece with byte fallback
                                             never emit more than one token per UTF-8 byte
          + 2 x compact JSON of tool schemas templates may pretty-print them (indentation, newlines)
          + TURN_TOKENS per message/input    role markers and separators of the chat template
          + per-image tokens x images        the vision encoder's share (learned per model)
          + the model's fixed overhead       template, Modelfile SYSTEM prompt (learned per model)

The two learned terms come from Ollama: `seed()` starts the fixed overhead at the size of the
model's Modelfile SYSTEM prompt and MESSAGEs as `/api/show` reports them (one token per byte),
and after each answer `observe()` raises both terms to what its `prompt_eval_count` proves (a
count above the text part can only come from the template or the images). Images start at
IMAGE_TOKENS each. Until then (a node that did not answer `/api/show`, a template that renders
more than TURN_TOKENS per turn, a costlier image) a request can still exceed its hold;
settlement then charges the hold and records the rest as `cost_capped_pico` (and the
`pr_usage_cost_capped_total` metric and the PrivateRouterCostCapped alert say so).

Pure: no I/O. One `PromptBounds` lives per process (AppContext.prompt_bounds), keyed by Ollama tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

TURN_TOKENS = 8  # generous for role markers: Llama 3 and Gemma spend 4-5 tokens per turn
IMAGE_TOKENS = 768  # initial per-image bound; raised per model from observed counts
TOOL_SCHEMA_FACTOR = 2  # a template may render tool schemas indented


@dataclass(frozen=True)
class PromptShape:
    """What a native request puts into the model's prompt: text bytes, turns and images."""

    text_bytes: int
    turns: int
    images: int

    def base_tokens(self) -> int:
        """The bound without the model's learned overheads."""
        return self.text_bytes + self.turns * TURN_TOKENS


def _utf8(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if value is None:
        return 0
    return len(orjson.dumps(value))


def prompt_shape(body: Mapping[str, Any]) -> PromptShape:
    """The shape of a native Ollama body (`/api/chat`, `/api/generate` or `/api/embed`).

    Counts every field a template can render: message content, thinking, tool calls and tool
    names; the generate prompt, system and suffix; embedding inputs; tool schemas.
    """
    text = 0
    turns = 0
    images = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            turns += 1
            for name in ("role", "content", "thinking", "tool_calls", "tool_name"):
                text += _utf8(message.get(name))
            images += len(message.get("images") or ())
    for name in ("prompt", "system", "suffix"):
        if body.get(name):
            text += _utf8(body[name])
            turns += 1
    images += len(body.get("images") or ())
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, list):
        for item in inputs:
            text += _utf8(item)
            turns += 1  # BOS/EOS and any instruction prefix per input
    if body.get("tools"):
        text += TOOL_SCHEMA_FACTOR * _utf8(body["tools"])
    return PromptShape(text, turns, images)


@dataclass
class _Learned:
    overhead: int = 0
    image_tokens: int = IMAGE_TOKENS


class PromptBounds:
    """Per-model overheads learned from Ollama's counts, and the bound they give (tokens)."""

    def __init__(self) -> None:
        self._models: dict[str, _Learned] = {}

    def bound(self, model: str, shape: PromptShape) -> int:
        """The most prompt tokens (int) a request of this shape costs on `model`, as far as known."""
        learned = self._models.get(model) or _Learned()
        return shape.base_tokens() + shape.images * learned.image_tokens + learned.overhead

    def observe(self, model: str, shape: PromptShape, prompt_eval_count: int) -> None:
        """Raise the model's overheads to what one answer proves (never lowers them).

        Without images the excess over the text part is template overhead; with images it is
        charged to the images (after the known template overhead), per image.
        """
        learned = self._models.setdefault(model, _Learned())
        above_text = prompt_eval_count - shape.base_tokens() - learned.overhead
        if shape.images:
            learned.image_tokens = max(learned.image_tokens, -(-above_text // shape.images))
        elif above_text > 0:
            learned.overhead += above_text

    def seed(self, model: str, overhead: int) -> None:
        """Raise the model's fixed overhead to at least `overhead` tokens (from `show_overhead`)."""
        learned = self._models.setdefault(model, _Learned())
        learned.overhead = max(learned.overhead, overhead)

    def overhead(self, model: str) -> int:
        """The learned fixed overhead of `model` in tokens (0 until an answer shows one)."""
        learned = self._models.get(model)
        return 0 if learned is None else learned.overhead


def show_overhead(show: Mapping[str, Any]) -> int:
    """Tokens (at most one per UTF-8 byte) that a model's Modelfile adds to every prompt, from its
    `/api/show` answer: the SYSTEM prompt and any MESSAGE turns (each with TURN_TOKENS)."""
    total = _utf8(show.get("system") or "")
    messages = show.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                total += _utf8(message.get("content")) + TURN_TOKENS
    return total
