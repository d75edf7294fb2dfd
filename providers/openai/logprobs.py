"""`logprobs` / `top_logprobs` on Chat Completions <-> Ollama's `logprobs` (servers 0.12.11 and later).

Ollama's entries are `{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}`
per generated token: OpenAI's `choices[].logprobs.content` items have the same fields, so the
mapping only checks types and fills what is missing (`bytes` from the token, `top_logprobs: []`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import ModelTarget
from providers.errors import InvalidRequest, UpstreamProtocolError
from providers.ollama.capabilities import LOGPROBS_SINCE
from providers.openai.params import boolean, integer, unsupported

MAX_TOP_LOGPROBS = 20  # OpenAI's and Ollama's limit
MAX_LEGACY_LOGPROBS = 5  # legacy Completions' `logprobs` is the top count, at most 5


def _require_version(target: ModelTarget) -> None:
    version = target.ollama_version
    if version is None or version < LOGPROBS_SINCE:
        served = ".".join(map(str, version)) if version is not None else "an unknown version"
        raise unsupported("logprobs", f"the model server for '{target.public_name}' runs {served}; token log "
                                      "probabilities need Ollama 0.12.11 or later.")


def request_logprobs(body: Mapping[str, Any], target: ModelTarget) -> dict[str, Any]:
    """The native `logprobs`/`top_logprobs` fields for the request ({} when not asked).

    Refused (400 naming the parameter) when the model's nodes run Ollama before 0.12.11, or when
    their version is not known yet (they would silently drop the field).
    """
    asked = boolean(body, "logprobs")
    top = integer(body, "top_logprobs", lo=0, hi=MAX_TOP_LOGPROBS)
    if not asked:
        if top:
            raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
        return {}
    _require_version(target)
    native: dict[str, Any] = {"logprobs": True}
    if top:
        native["top_logprobs"] = top
    return native


def _token(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("token"), str):
        raise UpstreamProtocolError("Ollama sent a logprob entry without a token")
    logprob = entry.get("logprob")
    if not isinstance(logprob, int | float) or isinstance(logprob, bool):
        raise UpstreamProtocolError("Ollama sent a logprob that is not a number")
    raw = entry.get("bytes")
    token: str = entry["token"]
    return {"token": token, "logprob": logprob,
            "bytes": list(raw) if isinstance(raw, list) else list(token.encode("utf-8", "surrogatepass"))}


def content_logprobs(entries: Any) -> list[dict[str, Any]]:
    """Ollama's `logprobs` list -> OpenAI's `logprobs.content` list."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UpstreamProtocolError("Ollama sent logprobs that are not a list")
    out = []
    for entry in entries:
        item = _token(entry)
        top = entry.get("top_logprobs") if isinstance(entry, Mapping) else None
        item["top_logprobs"] = [_token(alternative) for alternative in top] if isinstance(top, list) else []
        out.append(item)
    return out


def request_legacy_logprobs(body: Mapping[str, Any], target: ModelTarget) -> dict[str, Any]:
    """Legacy Completions' `logprobs` (an integer 0..5: how many alternatives) -> Ollama's fields.

    0 or absent asks for nothing; 1..5 needs Ollama 0.12.11 (as for chat). Ollama's own layer maps it the
    same way (`logprobs: true, top_logprobs: N`).
    """
    value = body.get("logprobs")
    if value is False or value is None:
        return {}
    top = integer(body, "logprobs", lo=0, hi=MAX_LEGACY_LOGPROBS)
    if not top:
        return {}
    _require_version(target)
    return {"logprobs": True, "top_logprobs": top}


def legacy_logprobs(entries: Any, offset: int) -> tuple[dict[str, Any], int]:
    """Ollama's `logprobs` -> legacy Completions' `{tokens, token_logprobs, top_logprobs, text_offset}`.

    `offset` is where the first token starts in the generated text (characters); returns the object and
    the offset after the last token, so a stream can continue counting.
    """
    out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for item in content_logprobs(entries):
        out["tokens"].append(item["token"])
        out["token_logprobs"].append(item["logprob"])
        out["top_logprobs"].append({alt["token"]: alt["logprob"] for alt in item["top_logprobs"]})
        out["text_offset"].append(offset)
        offset += len(item["token"])
    return out, offset
