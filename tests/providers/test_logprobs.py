"""logprobs / top_logprobs: passed through to Ollama >= 0.12.11 and mapped to OpenAI's shape; refused elsewhere."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import prepare, render_response, stream_encoder
from providers.errors import InvalidRequest, UpstreamProtocolError
from providers.openai.logprobs import content_logprobs
from tests.providers.translate_helpers import chat_request, ollama_chat, target

NEW = target("llama", ollama_version=(0, 12, 11))
ENTRY = {"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}, {"token": "Yo", "logprob": -2.0}]}


def test_asked_logprobs_reach_ollama() -> None:
    body = prepare("chat.completions", chat_request(logprobs=True, top_logprobs=2), NEW).body
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    assert "logprobs" not in prepare("chat.completions", chat_request(logprobs=False), NEW).body


@pytest.mark.parametrize("version", [(0, 12, 10), (0, 6, 0), None])
def test_older_or_unknown_servers_refuse_naming_the_parameter(version: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare("chat.completions", chat_request(logprobs=True), target("llama", ollama_version=version))
    assert info.value.param == "logprobs" and "0.12.11" in info.value.message


@pytest.mark.parametrize("body,param", [({"top_logprobs": 2}, "top_logprobs"),
                                        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
                                        ({"logprobs": "yes"}, "logprobs")])
def test_invalid_combinations(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare("chat.completions", chat_request(**body), NEW)
    assert info.value.param == param


def test_mapping_fills_bytes_and_empty_alternatives() -> None:
    assert content_logprobs([ENTRY, {"token": "!", "logprob": -1}]) == [
        {"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
            {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
            {"token": "Yo", "logprob": -2.0, "bytes": [89, 111]}]},
        {"token": "!", "logprob": -1, "bytes": [33], "top_logprobs": []}]
    with pytest.raises(UpstreamProtocolError):
        content_logprobs([{"token": "x", "logprob": "high"}])


def test_non_streaming_answer_carries_logprobs_content() -> None:
    prepared = prepare("chat.completions", chat_request(logprobs=True), NEW)
    answer, _ = render_response(prepared, NEW, ollama_chat("Hi", logprobs=[ENTRY]), response_id="c", created=0)
    assert answer["choices"][0]["logprobs"]["content"][0]["token"] == "Hi"
    plain = prepare("chat.completions", chat_request(), NEW)
    answer, _ = render_response(plain, NEW, ollama_chat("Hi", logprobs=[ENTRY]), response_id="c", created=0)
    assert answer["choices"][0]["logprobs"] is None


def test_stream_chunks_carry_their_logprobs() -> None:
    prepared = prepare("chat.completions", chat_request(logprobs=True, stream=True), NEW)
    encoder = stream_encoder(prepared, NEW, response_id="c", created=0)
    frame = encoder.feed(ollama_chat("Hi", done=False, logprobs=[ENTRY]))
    assert b'"logprobs":{"content":[{"token":"Hi"' in frame and b'"content":"Hi"' in frame


# --- legacy completions ---------------------------------------------------------------------------

def test_legacy_logprobs_count_becomes_top_logprobs() -> None:
    body = prepare("completions", {"model": "m", "prompt": "Once", "logprobs": 2}, NEW).body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert "logprobs" not in prepare("completions", {"model": "m", "prompt": "Once", "logprobs": 0}, NEW).body
    with pytest.raises(InvalidRequest) as info:
        prepare("completions", {"model": "m", "prompt": "Once", "logprobs": 6}, NEW)
    assert info.value.param == "logprobs"


def test_legacy_shape_with_text_offsets_across_stream_chunks() -> None:
    prepared = prepare("completions", {"model": "m", "prompt": "Once", "logprobs": 1, "stream": True}, NEW)
    encoder = stream_encoder(prepared, NEW, response_id="c", created=0)
    first = encoder.feed({"response": "Hi", "done": False, "logprobs": [ENTRY]})
    second = encoder.feed({"response": " you", "done": False, "logprobs": [{"token": " you", "logprob": -1.5}]})
    assert b'"text_offset":[0]' in first and b'"text_offset":[2]' in second
    answer, _ = render_response(prepare("completions", {"model": "m", "prompt": "Once", "logprobs": 1}, NEW), NEW,
                                {"response": "Hi", "done": True, "logprobs": [ENTRY]}, response_id="c", created=0)
    assert answer["choices"][0]["logprobs"] == {"tokens": ["Hi"], "token_logprobs": [-0.25],
                                                "top_logprobs": [{"Hi": -0.25, "Yo": -2.0}], "text_offset": [0]}
