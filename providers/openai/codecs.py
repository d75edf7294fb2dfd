"""Endpoint -> its codec (prepare, render, encoder). `providers.base` dispatches through here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from providers import responses_api
from providers.base import Endpoint, ModelTarget, PreparedRequest, StreamEncoder, Usage
from providers.openai import chat, chat_stream, completions, embeddings


def _no_stream(prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int) -> StreamEncoder:
    raise ValueError(f"{prepared.endpoint} answers are never streamed")


@dataclass(frozen=True)
class Codec:
    """The three translation steps of one endpoint."""

    prepare: Callable[[Mapping[str, Any], ModelTarget], PreparedRequest]
    render: Callable[[PreparedRequest, ModelTarget, Mapping[str, Any], str, int], tuple[dict[str, Any], Usage]]
    encoder: Callable[[PreparedRequest, ModelTarget, str, int], StreamEncoder]


CODECS: dict[str, Codec] = {
    "chat.completions": Codec(chat.prepare, chat.render, chat_stream.ChatStreamEncoder),
    "completions": Codec(completions.prepare, completions.render, completions.encoder),
    "embeddings": Codec(embeddings.prepare, embeddings.render, _no_stream),
    "responses": Codec(responses_api.prepare, responses_api.render, responses_api.encoder),
}


def codec_for(endpoint: Endpoint) -> Codec:
    """The codec of an endpoint; a ValueError for a name that is not one."""
    try:
        return CODECS[endpoint]
    except KeyError:
        raise ValueError(f"unknown endpoint {endpoint!r}") from None
