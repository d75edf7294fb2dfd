"""/v1/embeddings <-> /api/embed, both directions."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from providers.base import ModelTarget, PreparedRequest, prepare, render_response, stream_encoder
from providers.errors import UpstreamProtocolError
from tests.providers.translate_helpers import rejects, target


def embed_target(**kw: Any) -> ModelTarget:
    kw.setdefault("context", 8192)
    kw.setdefault("dimensions", 768)
    return target("embedding", kind="embedding", public_name="privaterouter/embed", tag="nomic-embed-text:latest",
                  **kw)


def request(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "privaterouter/embed", "input": "Vectors are nice"}
    body.update(kw)
    return body


def prepared(**kw: Any) -> PreparedRequest:
    return prepare("embeddings", request(**kw), embed_target())


def render(prep: PreparedRequest, ollama: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    return render_response(prep, embed_target(), ollama, response_id="embd-x", created=0)


# --- request ---------------------------------------------------------------------------------------

def test_string_input_goes_to_api_embed_as_a_list() -> None:
    prep = prepared()
    assert prep.ollama_path == "/api/embed" and prep.stream is False and prep.max_output_tokens is None
    # truncate: false, so an input over the context is refused rather than silently cut.
    assert prep.body == {"model": "nomic-embed-text:latest", "input": ["Vectors are nice"], "truncate": False}


def test_list_input_is_kept_in_order() -> None:
    assert prepared(input=["a", "b", "c"]).body["input"] == ["a", "b", "c"]


@pytest.mark.parametrize("value,param", [([1, 2, 3], "input[0]"), ([[1, 2]], "input[0]"), (["ok", 5], "input[1]"),
                                         ("", "input"), (["a", ""], "input[1]"), ([], "input"), (5, "input"),
                                         (["x"] * 2049, "input")])
def test_bad_inputs_are_refused(value: Any, param: str) -> None:
    assert rejects("embeddings", request(input=value), embed_target()).param == param


def test_missing_input_is_refused() -> None:
    assert rejects("embeddings", {"model": "m"}, embed_target()).param == "input"


def test_2048_inputs_are_allowed() -> None:
    assert len(prepared(input=["x"] * 2048).body["input"]) == 2048


def test_dimensions_are_forwarded_within_the_model_size() -> None:
    assert prepared(dimensions=256).body["dimensions"] == 256
    assert prepared(dimensions=768).body["dimensions"] == 768


@pytest.mark.parametrize("dimensions", [0, 769, "256", 1.5])
def test_bad_dimensions_are_refused(dimensions: Any) -> None:
    assert rejects("embeddings", request(dimensions=dimensions), embed_target()).param == "dimensions"


def test_dimensions_unchecked_above_when_the_model_size_is_unknown() -> None:
    prep = prepare("embeddings", request(dimensions=4096), embed_target(dimensions=None))
    assert prep.body["dimensions"] == 4096


@pytest.mark.parametrize("fmt", ["float16", "FLOAT", 1])
def test_unknown_encoding_format_is_refused(fmt: Any) -> None:
    assert rejects("embeddings", request(encoding_format=fmt), embed_target()).param == "encoding_format"


def test_chat_model_cannot_embed() -> None:
    assert rejects("embeddings", request(), target("qwen")).param == "model"


def test_model_options_are_passed_but_no_context_size_is_forced() -> None:
    prep = prepare("embeddings", request(), embed_target(options={"num_thread": 4}))
    assert prep.body["options"] == {"num_thread": 4}


def test_over_long_input_is_refused_rather_than_silently_truncated() -> None:
    err = rejects("embeddings", request(input=["short", "word " * 3000]), embed_target(context=2048))
    assert (err.code, err.param) == ("context_length_exceeded", "input[1]")


def test_embeddings_never_stream_and_ignore_output_limits() -> None:
    prep = prepared()
    prep.limit_output(10)
    assert "options" not in prep.body
    with pytest.raises(ValueError):
        stream_encoder(prep, embed_target(), response_id="x", created=0)


# --- answer ----------------------------------------------------------------------------------------

VECTORS = [[0.5, -0.25, 0.125], [1.0, 0.0, -1.0]]


def test_float_answer() -> None:
    prep = prepared(input=["a", "b"])
    answer, usage = render(prep, {"model": "m", "embeddings": VECTORS, "prompt_eval_count": 8})
    assert answer == {"object": "list", "model": "privaterouter/embed",
                      "data": [{"object": "embedding", "index": 0, "embedding": VECTORS[0]},
                               {"object": "embedding", "index": 1, "embedding": VECTORS[1]}],
                      "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (8, 0, False)


def test_base64_answer_is_little_endian_float32() -> None:
    prep = prepared(input=["a", "b"], encoding_format="base64")
    answer, _ = render(prep, {"embeddings": VECTORS, "prompt_eval_count": 8})
    for item, vector in zip(answer["data"], VECTORS, strict=True):
        raw = base64.b64decode(item["embedding"], validate=True)
        assert list(struct.unpack(f"<{len(vector)}f", raw)) == vector


def test_missing_count_is_estimated() -> None:
    prep = prepared()
    _, usage = render(prep, {"embeddings": [VECTORS[0]]})
    assert usage.estimated and usage.input_tokens == prep.prompt_tokens_estimate > 0


@pytest.mark.parametrize("ollama", [{}, {"embeddings": "x"}, {"embeddings": [VECTORS[0], VECTORS[1]]},
                                    {"embeddings": [["a", "b"]]}, {"embeddings": [5]}])
def test_malformed_answer_is_a_protocol_error(ollama: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        render(prepared(encoding_format="base64"), ollama)
