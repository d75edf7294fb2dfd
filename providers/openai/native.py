"""Pieces of the native Ollama request that every endpoint builds the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import ModelTarget
from providers.errors import InvalidRequest
from providers.families import Family
from providers.openai.params import wrong_type


def require_kind(target: ModelTarget, kind: str, endpoint: str) -> None:
    """A 400 naming `model` when the model cannot serve this endpoint (chat vs embedding)."""
    if target.kind != kind:
        raise InvalidRequest(f"The model '{target.public_name}' ({target.kind}) does not support {endpoint}.",
                             param="model")


def base_options(family: Family, target: ModelTarget) -> dict[str, Any]:
    """Ollama options before the client's: family defaults, then the model's, then its context size.

    `num_ctx` is the registry's `context` unless the model's options set it: the registry is what
    the context check and clients go by, and Ollama's own default is often far smaller.
    """
    options = {**family.options, **target.options}
    options.setdefault("num_ctx", target.context)
    return options


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# OpenAI's effort names -> Ollama's think levels (for models whose `think` takes levels).
_LEVELS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "max", "max": "max"}


def think_value(effort: Any, target: ModelTarget, family: Family, param: str) -> bool | str | None:
    """Ollama `think` for an OpenAI reasoning effort; None = send no `think` at all.

    Absent: the family's default (Ollama's own for every built-in family). `none`: `think: false`
    whenever the model thinks or the nodes have not said (harmless on a model that does not; only a
    model known not to think gets nothing, which keeps pre-`think` servers working). Any other level:
    a 400 on a model whose node says it does not think, else `true`, or the level for families whose
    `think` takes levels. Source of the rule: Ollama's API docs (`think`) and its own OpenAI layer,
    which maps `reasoning_effort` the same way.
    """
    if effort is None:
        return family.think_default
    if not isinstance(effort, str):
        raise wrong_type(param, "a string", effort)
    if effort not in REASONING_EFFORTS:
        raise InvalidRequest(
            f"Invalid value for '{param}': {effort!r}. Supported values: {', '.join(REASONING_EFFORTS)}.",
            param=param,
        )
    thinks = target.can("thinking")
    if effort == "none":
        return None if thinks is False else False
    if thinks is False:
        raise InvalidRequest(f"The model '{target.public_name}' does not support reasoning; use '{param}': "
                             f"'none' or omit it.", param=param)
    return _LEVELS[effort] if family.think_levels else True


def reasoning_effort(body: Mapping[str, Any]) -> tuple[Any, str]:
    """The effort a Chat Completions request asks for, and the parameter that named it.

    `reasoning_effort` (OpenAI) or OpenRouter's `reasoning` object: `effort`, `enabled` (false =
    "none", true without an effort = "medium"), `exclude` (see `reasoning_excluded`). Spellings that
    disagree are a 400; `reasoning.max_tokens` is a 400 (Ollama cannot cap the reasoning apart from
    the answer).
    """
    effort = body.get("reasoning_effort")
    nested = body.get("reasoning")
    if nested is None:
        return effort, "reasoning_effort"
    if not isinstance(nested, Mapping):
        raise wrong_type("reasoning", "an object", nested)
    if nested.get("max_tokens") is not None:
        raise InvalidRequest("'reasoning.max_tokens' is not supported: the model server cannot cap the reasoning "
                             "apart from the answer; use 'max_tokens' or 'reasoning.effort'.",
                             param="reasoning.max_tokens")
    inner, param = nested.get("effort"), "reasoning.effort"
    enabled = nested.get("enabled")
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise wrong_type("reasoning.enabled", "a boolean", enabled)
        implied = "none" if not enabled else (inner if inner not in (None, "none") else "medium")
        if inner is not None and inner != implied:
            raise InvalidRequest(f"'reasoning.enabled' ({enabled}) and 'reasoning.effort' ({inner!r}) disagree.",
                                 param="reasoning.enabled")
        inner, param = implied, "reasoning.enabled" if inner is None else param
    if inner is None:
        return effort, "reasoning_effort"
    if effort is not None and effort != inner:
        raise InvalidRequest(f"'reasoning_effort' ({effort!r}) and '{param}' ({inner!r}) disagree; "
                             f"send one of them.", param=param)
    return inner, param


def reasoning_excluded(body: Mapping[str, Any]) -> bool:
    """OpenRouter's `reasoning.exclude: true`: the model may think, but the answer carries no reasoning text."""
    nested = body.get("reasoning")
    if not isinstance(nested, Mapping) or nested.get("exclude") is None:
        return False
    exclude = nested["exclude"]
    if not isinstance(exclude, bool):
        raise wrong_type("reasoning.exclude", "a boolean", exclude)
    return exclude


def chat_body(target: ModelTarget, messages: list[dict[str, Any]], stream: bool, options: Mapping[str, Any],
              *, think: bool | str | None = None, fmt: str | dict[str, Any] | None = None,
              tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A native /api/chat body; `stream` always explicit (Ollama defaults to streaming), keep_alive untouched."""
    body: dict[str, Any] = {"model": target.tag, "messages": messages, "stream": stream}
    if options:
        body["options"] = dict(options)
    if think is not None:
        body["think"] = think
    if fmt is not None:
        body["format"] = fmt
    if tools:
        body["tools"] = tools
    return body
