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


def think_value(effort: Any, family: Family, param: str) -> bool | str | None:
    """Ollama `think` for an OpenAI reasoning effort (absent -> the family's default)."""
    if effort is None:
        return family.think_default
    if not isinstance(effort, str):
        raise wrong_type(param, "a string", effort)
    return family.think_for(effort, param)


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
