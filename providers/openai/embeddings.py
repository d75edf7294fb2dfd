"""/v1/embeddings <-> /api/embed (no streaming)."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping
from typing import Any, NoReturn

from providers.base import ModelTarget, PreparedRequest, Usage
from providers.errors import InvalidRequest, UpstreamProtocolError
from providers.openai.native import require_kind
from providers.openai.params import check_context, choice, integer, string, unsupported, wrong_type
from providers.tokens import measure_texts

MAX_INPUTS = 2048
# Ollama embeds text only. LangChain's OpenAIEmbeddings sends tiktoken token ids by default (its
# `check_embedding_ctx_length`), which would be meaningless to any non-OpenAI model: say which switch.
TOKEN_ARRAYS = ("token-id arrays cannot be embedded by this server; send text strings. LangChain's "
                "OpenAIEmbeddings sends token ids by default: create it with check_embedding_ctx_length=False.")


def _inputs(body: Mapping[str, Any]) -> list[str]:
    value = body.get("input")
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise wrong_type("input", "a string or an array of strings", value)
    if not items:
        raise InvalidRequest("Invalid 'input': empty array. Expected an array with minimum length 1.", param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"Invalid 'input': array too long. Expected an array with maximum length {MAX_INPUTS}, "
                             f"but got an array with length {len(items)} instead.", param="input")
    for i, item in enumerate(items):
        param = "input" if isinstance(value, str) else f"input[{i}]"
        if not isinstance(item, str):
            raise unsupported(param, TOKEN_ARRAYS)
        if not item:
            raise InvalidRequest("'$.input' is invalid: input cannot be an empty string.", param=param)
    return items


def prepare(body: Mapping[str, Any], target: ModelTarget) -> PreparedRequest:
    """Validate an Embeddings request and build the /api/embed body."""
    require_kind(target, "embedding", "embeddings")
    inputs = _inputs(body)
    encoding = choice(body, "encoding_format", ("float", "base64")) or "float"
    dimensions = integer(body, "dimensions", lo=1, hi=target.dimensions or 2**31 - 1)
    string(body, "user")
    # truncate: false -> Ollama refuses an input over the context instead of embedding a cut-off copy.
    native: dict[str, Any] = {"model": target.tag, "input": inputs, "truncate": False}
    if dimensions is not None:
        native["dimensions"] = dimensions
    if target.options:
        native["options"] = dict(target.options)
    # Ollama truncates over-long inputs silently; refuse them instead, like OpenAI does.
    for i, text in enumerate(inputs):
        check_context(measure_texts((text,)).typical(), None, target.context,
                      "input" if len(inputs) == 1 else f"input[{i}]")
    return PreparedRequest(endpoint="embeddings", ollama_path="/api/embed", body=native, stream=False,
                           prompt_tokens_estimate=measure_texts(inputs).estimate(), max_output_tokens=None,
                           include_usage=False, meta={"encoding_format": encoding, "inputs": len(inputs)})


def _float32_base64(vector: list[float]) -> str:
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def _protocol_error(what: str) -> NoReturn:
    raise UpstreamProtocolError(f"Ollama's embed answer is malformed: {what}")


def render(prepared: PreparedRequest, target: ModelTarget, ollama: Mapping[str, Any], response_id: str,
           created: int) -> tuple[dict[str, Any], Usage]:
    """Ollama's /api/embed answer -> OpenAI's embedding list (float lists or base64 float32)."""
    vectors = ollama.get("embeddings")
    if not isinstance(vectors, list):
        _protocol_error("no embeddings list")
    if len(vectors) != prepared.meta["inputs"]:
        _protocol_error(f"{len(vectors)} vectors for {prepared.meta['inputs']} inputs")
    as_base64 = prepared.meta["encoding_format"] == "base64"
    data = []
    for index, vector in enumerate(vectors):
        if not isinstance(vector, list):
            _protocol_error("a vector is not a list")
        try:
            embedding: Any = _float32_base64(vector) if as_base64 else vector
        except (TypeError, OverflowError):
            _protocol_error("a vector holds something other than numbers")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    counted = ollama.get("prompt_eval_count")
    if isinstance(counted, int) and not isinstance(counted, bool) and counted > 0:
        usage = Usage(counted, 0, estimated=False)
    else:
        usage = Usage(prepared.prompt_tokens_estimate, 0, estimated=True)
    answer = {"object": "list", "data": data, "model": target.public_name,
              "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}}
    return answer, usage

