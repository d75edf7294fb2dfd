"""Legacy /v1/completions <-> /api/generate, both directions, streaming and not."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import ModelTarget, PreparedRequest, prepare, render_response, stream_encoder
from tests.providers.translate_helpers import rejects, sse_json, target

RID = "cmpl-test"


def request(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "prompt": "Once upon a time"}
    body.update(kw)
    return body


def prepared(tgt: ModelTarget | None = None, **kw: Any) -> PreparedRequest:
    return prepare("completions", request(**kw), tgt or target("llama"))


def generate(response: str = "", *, done: bool = True, done_reason: str | None = "stop", **extra: Any
             ) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "tag", "created_at": "2026-01-01T00:00:00Z", "response": response, "done": done}
    if done:
        out.update({"done_reason": done_reason, "context": [1, 2], "prompt_eval_count": 6, "eval_count": 4})
    out.update(extra)
    return out


# --- request ---------------------------------------------------------------------------------------

def test_prompt_goes_to_api_generate_with_explicit_stream() -> None:
    prep = prepared(target("llama", tag="llama3.2:latest", context=4096), max_tokens=16, temperature=0.5, stop="\n")
    assert prep.ollama_path == "/api/generate" and prep.endpoint == "completions"
    assert prep.body == {"model": "llama3.2:latest", "prompt": "Once upon a time", "stream": False,
                         "options": {"num_ctx": 4096, "temperature": 0.5, "stop": ["\n"], "num_predict": 16}}


def test_a_list_of_one_prompt_is_that_prompt() -> None:
    assert prepared(prompt=["Hello"]).body["prompt"] == "Hello"


@pytest.mark.parametrize("prompt", [["a", "b"], [], [1, 2, 3], [[1, 2]], 5, None])
def test_other_prompt_shapes_are_refused(prompt: Any) -> None:
    body = request(prompt=prompt)
    if prompt is None:
        del body["prompt"]
    assert rejects("completions", body, target("llama")).param == "prompt"


def test_suffix_is_forwarded() -> None:
    assert prepared(suffix="return x").body["suffix"] == "return x"


def test_thinking_models_are_asked_not_to_think() -> None:
    assert prepared(target("qwen")).body["think"] is False
    assert prepared(target("gemma")).body["think"] is False  # gemma4 thinks: its node says so
    assert prepared(target("llama", capabilities=None)).body["think"] is False  # unknown: harmless
    assert "think" not in prepared(target("llama")).body


@pytest.mark.parametrize("key,value", [("echo", True), ("best_of", 2), ("n", 3), ("logprobs", 2),
                                       ("logit_bias", {"1": 5})])
def test_unsupported_parameters_are_refused(key: str, value: Any) -> None:
    assert rejects("completions", request(**{key: value}), target("llama")).param == key


@pytest.mark.parametrize("key,value", [("echo", False), ("best_of", 1), ("n", 1), ("logprobs", 0),
                                       ("logit_bias", {}), ("user", "u")])
def test_harmless_values_are_accepted(key: str, value: Any) -> None:
    assert prepared(**{key: value}).body["prompt"] == "Once upon a time"


def test_include_usage_needs_stream() -> None:
    assert rejects("completions", request(stream_options={"include_usage": True}), target("llama")).param == \
        "stream_options"
    assert prepared(stream=True, stream_options={"include_usage": True}).include_usage


def test_embedding_model_cannot_complete() -> None:
    assert rejects("completions", request(), target("embedding", kind="embedding")).param == "model"


def test_context_check_counts_prompt_and_max_tokens() -> None:
    err = rejects("completions", request(prompt="word " * 100, max_tokens=1000), target("llama", context=1024))
    assert (err.code, err.param) == ("context_length_exceeded", "prompt")


# --- answer ----------------------------------------------------------------------------------------

def test_text_completion_object() -> None:
    tgt = target("llama", public_name="privaterouter/fast")
    answer, usage = render_response(prepared(tgt), tgt, generate(" there was a fox."), response_id=RID, created=9)
    assert answer == {"id": RID, "object": "text_completion", "created": 9, "model": "privaterouter/fast",
                      "choices": [{"text": " there was a fox.", "index": 0, "logprobs": None, "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}}
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (6, 4, False)


@pytest.mark.parametrize("done_reason,finish", [("stop", "stop"), ("length", "length"), ("load", "stop"),
                                                (None, "stop")])
def test_finish_reason(done_reason: str | None, finish: str) -> None:
    tgt = target("llama")
    answer, _ = render_response(prepared(tgt), tgt, generate("x", done_reason=done_reason), response_id=RID, created=0)
    assert answer["choices"][0]["finish_reason"] == finish


def test_thinking_is_not_part_of_the_text_but_is_counted() -> None:
    tgt = target("qwen")
    answer, usage = render_response(prepared(tgt), tgt, generate("4", thinking="two plus two", eval_count=None),
                                    response_id=RID, created=0)
    assert answer["choices"][0]["text"] == "4" and usage.output_tokens >= 2 and usage.estimated


def stream(chunks: list[dict[str, Any]], **kw: Any) -> bytes:
    tgt = target("llama")
    enc = stream_encoder(prepared(tgt, stream=True, **kw), tgt, response_id=RID, created=5)
    return b"".join(enc.feed(c) for c in chunks) + enc.finish()


def test_stream_chunks_text_then_finish_then_done() -> None:
    raw = stream([generate("Once", done=False), generate(" more", done=False), generate("", done_reason="length")])
    chunks = sse_json(raw)
    assert [c["choices"][0]["text"] for c in chunks] == ["Once", " more", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "length"]
    assert {(c["id"], c["object"], c["created"]) for c in chunks} == {(RID, "text_completion", 5)}
    assert raw.endswith(b"data: [DONE]\n\n")


def test_stream_usage_chunk_when_asked() -> None:
    chunks = sse_json(stream([generate("x")], stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 4,
                                                                   "total_tokens": 10}


def test_stream_fail_and_usage_before_done() -> None:
    tgt = target("llama")
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=5)
    assert not enc.started
    enc.feed(generate("abc", done=False))
    assert enc.started and enc.usage().estimated and enc.usage().output_tokens == 1
    raw = enc.fail("upstream_error", "boom")
    assert sse_json(raw)[0]["error"]["code"] == "upstream_error" and b"[DONE]" not in raw
    assert enc.finish() == b""
