"""Deterministic model output: reply words, thinking, JSON for `format`, tool calls, token counts.

Nothing here does I/O; the same request always yields the same turn (tool call ids aside).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .decode import Options

WORDS = (
    "the", "quick", "model", "answers", "every", "question", "with", "calm", "and", "careful", "words", "about",
    "rivers", "mountains", "light", "silver", "paper", "engines", "gardens", "stars", "slowly", "bright", "small",
    "tokens", "flow", "through", "quiet", "networks", "while", "clocks", "keep", "time", "under", "open", "skies",
    "bridges", "carry", "signals", "across", "valleys", "where", "lamps", "glow", "in", "amber", "evenings", "as",
    "patient", "servers", "listen", "to", "distant", "requests", "from", "many", "users", "who", "wait", "for",
    "useful", "replies", "built", "one", "word",
)
THOUGHTS = (
    "let", "me", "think", "about", "what", "the", "user", "wants", "here", "first", "consider", "context", "then",
    "check", "details", "carefully", "before", "answering", "plainly", "ok", "so", "this", "means", "a", "short",
    "clear", "reply", "should", "work", "now", "write", "it",
)
TOOL_CALL_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"


def word_count(text: str) -> int:
    """Tokens of a text for counting purposes: its whitespace-separated words."""
    return len(text.split())


def split_tokens(text: str) -> list[str]:
    """Split text into word tokens, each after the first keeping its leading space."""
    parts = text.split(" ")
    return [parts[0], *(" " + part for part in parts[1:])]


def _seed(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=512)
def reply_tokens(seed_text: str, count: int) -> tuple[str, ...]:
    """`count` reply tokens for a prompt: capitalised first word, leading spaces after, a final period."""
    if count <= 0:
        return ()
    start = _seed(seed_text)
    # 37 is odd, so the stride visits every one of the 64 words before repeating.
    words = [WORDS[(start + i * 37) % len(WORDS)] for i in range(count)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return (words[0], *(" " + word for word in words[1:]))


@lru_cache(maxsize=512)
def thinking_tokens(seed_text: str, count: int) -> tuple[str, ...]:
    """`count` tokens of reasoning text for a prompt."""
    if count <= 0:
        return ()
    start = _seed(seed_text) >> 7
    words = [THOUGHTS[(start + i * 5) % len(THOUGHTS)] for i in range(count)]
    words[0] = words[0].capitalize()
    words[-1] += "."
    return (words[0], *(" " + word for word in words[1:]))


def sample(schema: Any, depth: int = 0, root: Any = None) -> Any:
    """A value that conforms to a JSON schema, as Ollama's grammar-constrained output would.

    Handles what clients generate (pydantic, zod, LangChain): `$ref` into `$defs`/`definitions`,
    `enum`/`const`, `anyOf`/`oneOf`/`allOf`, nullable type lists, required properties, numeric
    bounds, string and array lengths. Strings are "x" repeated to the minimum length.
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 16:
        return "x"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        return sample(_resolve(ref, root), depth + 1, root)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return sample(options[0], depth + 1, root)
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in parts:
            if isinstance(part, dict) and "$ref" in part:
                part = _resolve(part["$ref"], root)
            if isinstance(part, dict):
                merged.setdefault("properties", {}).update(part.get("properties") or {})
                merged["required"] = [*merged.get("required", []), *(part.get("required") or [])]
                merged.setdefault("type", part.get("type"))
        return sample(merged, depth + 1, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and isinstance(schema.get("properties"), dict):
        kind = "object"
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        required = schema.get("required")
        names = [n for n in required if n in properties] if isinstance(required, list) else list(properties)
        return {name: sample(properties[name], depth + 1, root) for name in names}
    if kind == "array":
        items = schema.get("items")
        count = max(1 if items is not None else 0, int(schema.get("minItems") or 0))
        maximum = schema.get("maxItems")
        if isinstance(maximum, int):
            count = min(count, maximum)
        return [sample(items, depth + 1, root) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        value = 1
        if isinstance(low, int | float) and not isinstance(low, bool):
            value = int(low) + 1 if "exclusiveMinimum" in schema or low != int(low) else int(low)
            value = max(value, 1) if not isinstance(high, int | float) or high >= 1 else value
        if isinstance(high, int | float) and not isinstance(high, bool) and value > high:
            value = int(high) - 1 if "exclusiveMaximum" in schema else int(high)
        return value
    if kind == "string":
        length = schema.get("minLength")
        return "x" * max(1, length if isinstance(length, int) else 1)
    return {"boolean": True, "null": None}.get(kind, "x") if isinstance(kind, str) else "x"


def _resolve(ref: str, root: Any) -> Any:
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    return target


def tool_call(tools: list[Any], call_id: str) -> dict[str, Any]:
    """A whole-object call of the first declared tool, arguments built from its parameter schema."""
    first = tools[0] if isinstance(tools[0], dict) else {}
    function = first.get("function") if isinstance(first.get("function"), dict) else {}
    assert isinstance(function, dict)
    name = function.get("name") if isinstance(function.get("name"), str) else ""
    arguments = sample(function.get("parameters") or {"type": "object", "properties": {}})
    if not isinstance(arguments, dict):
        arguments = {}
    return {"id": call_id, "function": {"index": 0, "name": name, "arguments": arguments}}


def json_reply(fmt: str | dict[str, Any], seed_text: str) -> str:
    """The JSON text a `format` request answers with."""
    if isinstance(fmt, dict):
        value = sample(fmt)
    else:
        value = {"answer": "".join(reply_tokens(seed_text, 6))}
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Turn:
    """What the model "generated": pieces in order, why it stopped, and its token counts."""

    pieces: list[tuple[str, Any]] = field(default_factory=list)  # ("thinking"|"content"|"tool_calls", payload)
    done_reason: str = "stop"
    eval_count: int = 0
    prompt_tokens: int = 0

    def text(self, kind: str) -> str:
        return "".join(payload for k, payload in self.pieces if k == kind)

    def tool_calls(self) -> list[dict[str, Any]]:
        return [call for k, payload in self.pieces if k == "tool_calls" for call in payload]


@dataclass(frozen=True)
class Plan:
    """Everything that decides a turn."""

    seed_text: str
    prompt_tokens: int
    tokens_per_reply: int
    options: Options
    think: bool = False
    output_format: str | dict[str, Any] | None = None
    call: dict[str, Any] | None = None
    shift: bool = True


def generate(plan: Plan) -> Turn:
    """Run the deterministic "model"."""
    turn = Turn(prompt_tokens=plan.prompt_tokens)
    budget = plan.options.num_predict if plan.options.num_predict > 0 else 1 << 62
    if not plan.shift:
        budget = min(budget, max(0, plan.options.num_ctx - plan.prompt_tokens))
    if plan.think:
        thoughts = thinking_tokens(plan.seed_text, max(1, plan.tokens_per_reply // 4))
        taken = thoughts[:budget]
        turn.pieces.extend(("thinking", token) for token in taken)
        turn.eval_count += len(taken)
        budget -= len(taken)
        if len(taken) < len(thoughts):
            turn.done_reason = "length"
            return turn
    if plan.call is not None:
        turn.pieces.append(("tool_calls", [plan.call]))
        turn.eval_count += 5 + len(json.dumps(plan.call["function"]["arguments"])) // 4
        return turn
    if plan.output_format is not None:
        tokens: tuple[str, ...] | list[str] = split_tokens(json_reply(plan.output_format, plan.seed_text))
    else:
        tokens = reply_tokens(plan.seed_text, plan.tokens_per_reply)
    _emit_content(turn, tokens, budget, plan.options.stop)
    return turn


def _emit_content(turn: Turn, tokens: tuple[str, ...] | list[str], budget: int, stops: tuple[str, ...]) -> None:
    if len(tokens) > budget:
        tokens = tokens[:budget]
        turn.done_reason = "length"
    if stops:
        text = "".join(tokens)
        hits = [(text.find(stop), stop) for stop in stops]
        found = [(index, stop) for index, stop in hits if index >= 0]
        if found:
            cut, stop = min(found)
            turn.done_reason = "stop"
            offset = 0
            for token in tokens:
                if offset >= cut + len(stop):
                    break
                piece = token[: max(0, cut - offset)]
                if piece:
                    turn.pieces.append(("content", piece))
                turn.eval_count += 1
                offset += len(token)
            return
    turn.pieces.extend(("content", token) for token in tokens)
    turn.eval_count += len(tokens)
