"""Round trips through the official `openai` SDK: its request -> prepare -> canned Ollama -> our answer -> its parser.

The SDK runs with strict response validation, so every answer and every stream event must match
its typed models (ChatCompletion, ChatCompletionChunk, Completion, CreateEmbeddingResponse,
Response and the Responses stream events). Its streaming helpers (`.stream(...)`) also check that
the chunk/event sequence accumulates into a coherent final object.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import openai
import orjson
import pytest
from pydantic import BaseModel

from providers.base import Endpoint, ModelTarget, new_response_id, prepare, render_response, stream_encoder
from tests.providers.translate_helpers import PNG_URL, ollama_call, ollama_chat, sdk_client, target

Chunks = list[dict[str, Any]]


def gateway(endpoint: Endpoint, tgt: ModelTarget, answer: dict[str, Any], chunks: Chunks | None = None,
            fail: tuple[str, str] | None = None) -> Callable[[dict[str, Any]], tuple[bytes, str]]:
    """What the gateway does with one request, minus auth, billing and HTTP to Ollama."""

    def handle(body: dict[str, Any]) -> tuple[bytes, str]:
        prep = prepare(endpoint, body, tgt)
        rid = new_response_id(endpoint)
        if not prep.stream:
            rendered, _ = render_response(prep, tgt, answer, response_id=rid, created=1700000000)
            return orjson.dumps(rendered), "application/json"
        enc = stream_encoder(prep, tgt, response_id=rid, created=1700000000)
        raw = b"".join(enc.feed(c) for c in (chunks or [answer]))
        raw += enc.fail(*fail) if fail else enc.finish()
        return raw, "text/event-stream"

    return handle


QWEN = target("qwen", public_name="privaterouter/qwen-fast", tag="qwen3:latest")
GEMMA = target("gemma", public_name="privaterouter/fast", tag="gemma4:latest")
HI: Any = [{"role": "user", "content": "Say hi"}]
CALL = ollama_call("get_weather", {"city": "Tokyo"})
THINKING_STREAM = [ollama_chat("", thinking="The user", done=False), ollama_chat("", thinking=" greets.", done=False),
                   ollama_chat("Hi", done=False), ollama_chat("!", done=False),
                   ollama_chat("", prompt_eval_count=9, eval_count=6)]


# --- chat ------------------------------------------------------------------------------------------

def test_chat_completion_parses() -> None:
    seen: list[dict[str, Any]] = []
    client = sdk_client(gateway("chat.completions", QWEN, ollama_chat("Hi!", thinking="greet back")), seen)
    completion = client.chat.completions.create(model="privaterouter/qwen-fast", messages=HI, max_tokens=20,
                                                temperature=0.2, stop=["\n"], seed=1, user="u1")
    assert completion.model == "privaterouter/qwen-fast" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Hi!" and completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.model_extra == {"reasoning_content": "greet back", "reasoning": "greet back"}
    assert completion.usage is not None and completion.usage.total_tokens == 18
    assert seen[0]["max_tokens"] == 20


def test_chat_tool_call_answer_parses() -> None:
    client = sdk_client(gateway("chat.completions", QWEN, ollama_chat("", tool_calls=[CALL])))
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    completion = client.chat.completions.create(model="m", messages=HI, tools=[tool], tool_choice="auto",
                                                parallel_tool_calls=True)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id == "call_ab12cd34"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Tokyo"}


def test_sdk_tool_round_trip_history_is_accepted() -> None:
    seen: list[dict[str, Any]] = []
    client = sdk_client(gateway("chat.completions", QWEN, ollama_chat("It is 22C in Tokyo.")), seen)
    messages: list[Any] = [*HI, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"}]
    completion = client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == "It is 22C in Tokyo."


def test_chat_image_request_from_the_sdk_is_translated() -> None:
    client = sdk_client(gateway("chat.completions", GEMMA, ollama_chat("A pixel.")))
    content: Any = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
    assert completion.choices[0].message.content == "A pixel."


def test_chat_http_image_is_refused_before_any_answer() -> None:
    handler = gateway("chat.completions", GEMMA, ollama_chat("x"))
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}}]}]}
    from providers.errors import InvalidRequest
    with pytest.raises(InvalidRequest) as info:
        handler(body)
    assert info.value.param == "messages[0].content[0].image_url"


class Weather(BaseModel):
    city: str
    celsius: int


def test_structured_output_parse() -> None:
    seen: list[dict[str, Any]] = []
    client = sdk_client(gateway("chat.completions", QWEN, ollama_chat('{"city":"Tokyo","celsius":22}')), seen)
    completion = client.chat.completions.parse(model="m", messages=HI, response_format=Weather)
    assert completion.choices[0].message.parsed == Weather(city="Tokyo", celsius=22)
    assert seen[0]["response_format"]["type"] == "json_schema"


def test_chat_stream_parses_every_chunk_with_usage() -> None:
    client = sdk_client(gateway("chat.completions", QWEN, {}, THINKING_STREAM))
    chunks = list(client.chat.completions.create(model="m", messages=HI, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
                        for c in chunks if c.choices)
    assert (text, reasoning) == ("Hi!", "The user greets.")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_chat_stream_helper_accumulates_tool_calls() -> None:
    chunks = [ollama_chat("", tool_calls=[CALL], done=False),
              ollama_chat("", tool_calls=[ollama_call("get_time", {}, 1, "call_2")], done=False), ollama_chat("")]
    client = sdk_client(gateway("chat.completions", QWEN, {}, chunks))
    tools: Any = [{"type": "function", "function": {"name": n}} for n in ("get_weather", "get_time")]
    with client.chat.completions.stream(model="m", messages=HI, tools=tools) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_ab12cd34", "get_weather", '{"city":"Tokyo"}'), ("call_2", "get_time", "{}")]


def test_chat_stream_error_raises_in_the_sdk() -> None:
    client = sdk_client(gateway("chat.completions", QWEN, {}, THINKING_STREAM[:2],
                                fail=("upstream_error", "model runner has unexpectedly stopped")))
    stream = client.chat.completions.create(model="m", messages=HI, stream=True)
    with pytest.raises(openai.APIError, match="model runner has unexpectedly stopped"):
        list(stream)


# --- legacy completions ----------------------------------------------------------------------------

def generate(text: str, done: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "t", "created_at": "2026-01-01T00:00:00Z", "response": text, "done": done}
    if done:
        out.update(done_reason="stop", prompt_eval_count=4, eval_count=3)
    return out


def test_completion_parses() -> None:
    client = sdk_client(gateway("completions", GEMMA, generate(" a fox.")))
    completion = client.completions.create(model="m", prompt="Once upon a time", max_tokens=10)
    assert completion.object == "text_completion" and completion.choices[0].text == " a fox."
    assert completion.choices[0].finish_reason == "stop" and completion.usage is not None


def test_completion_stream_parses() -> None:
    # The SDK types `finish_reason` as never null, yet streams carry null until the end (as OpenAI's
    # do), so this one is parsed the SDK's default, lenient way.
    client = sdk_client(gateway("completions", GEMMA, {}, [generate("a", False), generate("b", False),
                                                           generate("")]), strict=False)
    chunks = list(client.completions.create(model="m", prompt="x", stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "ab"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7


# --- embeddings ------------------------------------------------------------------------------------

EMBED = target("embedding", kind="embedding", public_name="privaterouter/embed", tag="nomic-embed-text",
               dimensions=4)
VECTORS = [[0.5, -0.25, 0.125, 0.0], [1.0, 0.0, -1.0, 0.75]]


@pytest.mark.parametrize("encoding", [None, "float", "base64"])
def test_embeddings_parse_in_every_encoding(encoding: str | None) -> None:
    seen: list[dict[str, Any]] = []
    # A base64 answer holds strings where the SDK's model says floats; the SDK decodes them after
    # validation, so strict validation only fits float answers.
    client = sdk_client(gateway("embeddings", EMBED, {"embeddings": VECTORS, "prompt_eval_count": 6}), seen,
                        strict=encoding == "float")
    kwargs: Any = {"encoding_format": encoding} if encoding else {}
    result = client.embeddings.create(model="privaterouter/embed", input=["a", "b"], dimensions=4, **kwargs)
    vectors: list[Any] = [d.embedding for d in result.data]
    if encoding == "base64":  # asked for explicitly, the SDK hands the strings over as they are
        vectors = [list(struct.unpack("<4f", base64.b64decode(v))) for v in vectors]
    assert vectors == VECTORS  # exactly representable in float32
    assert result.model == "privaterouter/embed" and result.usage.prompt_tokens == 6
    if encoding is None:
        assert seen[0]["encoding_format"] == "base64"  # the SDK asks for base64 and decodes it itself


# --- responses -------------------------------------------------------------------------------------

def test_response_parses_and_output_text_works() -> None:
    client = sdk_client(gateway("responses", QWEN, ollama_chat("Hello!", thinking="Greet.")))
    response = client.responses.create(model="m", input="Hi", instructions="Be kind", max_output_tokens=30)
    assert response.output_text == "Hello!" and response.status == "completed"
    assert response.model == "privaterouter/qwen-fast" and response.id.startswith("resp_")
    assert response.usage is not None and response.usage.total_tokens == 18


def test_incomplete_response_parses() -> None:
    client = sdk_client(gateway("responses", QWEN, ollama_chat("cut", done_reason="length")))
    response = client.responses.create(model="m", input="Hi", max_output_tokens=1)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_response_stream_events_parse() -> None:
    client = sdk_client(gateway("responses", QWEN, {}, THINKING_STREAM))
    events = list(client.responses.create(model="m", input=[{"role": "user", "content": "Hi"}], stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hi!"


def test_response_stream_helper_builds_the_final_response() -> None:
    client = sdk_client(gateway("responses", QWEN, {}, THINKING_STREAM))
    with client.responses.stream(model="m", input="Hi", instructions="x") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "Hi!" and final.output_text == "Hi!"
    assert final.usage is not None and final.usage.output_tokens == 6


def test_response_stream_failure_parses() -> None:
    client = sdk_client(gateway("responses", QWEN, {}, THINKING_STREAM[:3], fail=("upstream_error", "crashed")))
    events = list(client.responses.create(model="m", input="Hi", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.error is not None
    assert failed.response.error.message == "crashed"
