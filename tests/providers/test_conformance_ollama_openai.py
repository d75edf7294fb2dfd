"""Conformance with Ollama's own OpenAI layer (`middleware/openai.go`), behaviour by behaviour.

Each test first states, in its docstring, what Ollama's `/v1` layer does for the same input
(source: /work/shared/research/ollama-api.md section 10, from Ollama's openai.go, its
openai_test.go and the API docs), then asserts what we do. Where we differ on purpose the
docstring says "Differs on purpose" and why; everything else must match.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.base import ModelTarget, PreparedRequest, prepare, render_response, stream_encoder
from tests.providers.translate_helpers import (
    PNG_B64,
    PNG_URL,
    chat_request,
    ollama_call,
    ollama_chat,
    rejects,
    sse_events,
    sse_json,
    target,
    user,
)

QWEN = target("qwen", tag="qwen3:latest", public_name="privaterouter/qwen-fast", context=40960,
              ollama_version=(0, 12, 11))
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


def native(**kw: Any) -> dict[str, Any]:
    return prepare("chat.completions", chat_request(**kw), QWEN).body


def prepared(**kw: Any) -> PreparedRequest:
    return prepare("chat.completions", chat_request(**kw), QWEN)


def answer(ollama: dict[str, Any], **kw: Any) -> dict[str, Any]:
    rendered, _ = render_response(prepared(**kw), QWEN, ollama, response_id="chatcmpl-1", created=1)
    return rendered


def chunks(lines: list[dict[str, Any]], tgt: ModelTarget = QWEN, **kw: Any) -> list[dict[str, Any]]:
    enc = stream_encoder(prepare("chat.completions", chat_request(stream=True, **kw), tgt), tgt,
                         response_id="chatcmpl-1", created=1)
    raw = b"".join(enc.feed(line) for line in lines) + enc.finish()
    assert raw.endswith(b"data: [DONE]\n\n")
    return sse_json(raw)


# --- request mapping (10.1) ----------------------------------------------------------------------

def test_model_is_the_ollama_tag() -> None:
    """Ollama: `model` verbatim. Differs on purpose: clients send the public name; we send the node's tag."""
    assert native()["model"] == "qwen3:latest"


def test_stream_is_always_explicit() -> None:
    """Ollama: `stream` is sent explicitly (default false). Same."""
    assert native()["stream"] is False and native(stream=True)["stream"] is True


def test_content_parts_are_merged_into_one_message() -> None:
    """Ollama: one native message per content part (text -> content, image -> images with empty content).
    Differs on purpose: one message, texts joined and images collected, which chat templates render as one
    turn instead of several consecutive user turns."""
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": PNG_URL}},
             {"type": "text", "text": "b"}]
    gemma = target("gemma")  # a model whose node lists vision
    assert prepare("chat.completions", chat_request(messages=[{"role": "user", "content": parts}]), gemma).body[
        "messages"] == [{"role": "user", "content": "a\nb", "images": [PNG_B64]}]


def test_http_image_urls_are_refused() -> None:
    """Ollama: `http(s)` image URL -> 400 "image URLs are not currently supported". Same (400, naming the part)."""
    parts = [{"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}]
    err = rejects("chat.completions", chat_request(messages=[{"role": "user", "content": parts}]),
                  target("gemma"))
    assert err.param == "messages[0].content[0].image_url"


def test_assistant_tool_call_arguments_become_objects_and_ids_are_kept() -> None:
    """Ollama: `arguments` JSON string -> object, `id` kept, `content: null` -> "". Same; "" arguments -> {}."""
    history = [user("w?"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    messages = native(messages=history, tools=[WEATHER])["messages"]
    assert messages[1]["content"] == "" and messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == {}
    assert messages[2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "tool_name": "get_weather"}


def test_reasoning_passed_back_becomes_thinking() -> None:
    """Ollama: assistant `reasoning` -> `thinking`. Same, and DeepSeek's `reasoning_content` too."""
    for key in ("reasoning", "reasoning_content"):
        history = [user(), {"role": "assistant", "content": "hi", key: "hm"}, user("again")]
        assert native(messages=history)["messages"][1]["thinking"] == "hm"


def test_max_tokens_and_max_completion_tokens() -> None:
    """Ollama: `max_tokens` -> `num_predict`; `max_completion_tokens` ignored. Differs on purpose: both map,
    since current OpenAI clients send only `max_completion_tokens`."""
    assert native(max_tokens=5)["options"]["num_predict"] == 5
    assert native(max_completion_tokens=7)["options"]["num_predict"] == 7


def test_absent_sampling_parameters_keep_the_models_defaults() -> None:
    """Ollama: absent `temperature`/`top_p` -> 1.0, overriding the Modelfile. Differs on purpose: nothing is
    sent, so a model's recommended sampling (e.g. Qwen's temperature 0.6) applies as for native clients."""
    options = native()["options"]
    assert "temperature" not in options and "top_p" not in options
    given = native(temperature=0.2, top_p=0.5)["options"]
    assert (given["temperature"], given["top_p"]) == (0.2, 0.5)


def test_stop_and_penalties_and_seed() -> None:
    """Ollama: `stop` string/array -> `options.stop`; seed and penalties -> options when present. Same."""
    options = native(stop="\n", seed=3, presence_penalty=0.5, frequency_penalty=-0.5)["options"]
    assert options["stop"] == ["\n"] and options["seed"] == 3
    assert (options["presence_penalty"], options["frequency_penalty"]) == (0.5, -0.5)


def test_response_format() -> None:
    """Ollama: json_object -> format "json"; json_schema -> format <schema>; text -> none. Same."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert native(response_format={"type": "json_object"})["format"] == "json"
    assert native(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})[
        "format"] == schema
    assert "format" not in native(response_format={"type": "text"})


def test_reasoning_effort_levels() -> None:
    """Ollama: none -> think false; minimal -> "low"; low/medium/high -> the level; xhigh -> "max".
    Differs on purpose for boolean models: we send `true` unless the family takes levels (gpt-oss style),
    because a level string means nothing more than `true` to a hybrid-thinking model. `none` is the same."""
    assert native(reasoning_effort="none")["think"] is False
    assert native(reasoning_effort="minimal")["think"] is True
    assert native(reasoning={"effort": "none"})["think"] is False


def test_tool_choice_and_parallel_tool_calls() -> None:
    """Ollama: `tool_choice` and `parallel_tool_calls` are ignored. Differs on purpose: ignoring them breaks
    forced calls (LangChain structured output returns None); `required`/named are enforced with `format`,
    `parallel_tool_calls: false` keeps one call, `none` sends no tools."""
    assert native(tools=[WEATHER], tool_choice="required")["format"] == WEATHER["function"]["parameters"]
    assert "tools" not in native(tools=[WEATHER], tool_choice="none")
    two = [ollama_call("get_weather", {"city": "a"}, 0, "c1"), ollama_call("get_weather", {"city": "b"}, 1, "c2")]
    assert len(answer(ollama_chat("", tool_calls=two), tools=[WEATHER], parallel_tool_calls=False)["choices"][0][
        "message"]["tool_calls"]) == 1


def test_logprobs_pass_through() -> None:
    """Ollama: `logprobs`/`top_logprobs` passed through. Same on nodes >= 0.12.11 (a 400 on older ones)."""
    body = native(logprobs=True, top_logprobs=3)
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)


def test_n_and_logit_bias_are_refused() -> None:
    """Ollama: `n`, `logit_bias` ignored. Differs on purpose: a 400 naming them, never a silent ignore."""
    assert rejects("chat.completions", chat_request(n=2)).param == "n"
    assert rejects("chat.completions", chat_request(logit_bias={"1": 2})).param == "logit_bias"


def test_empty_messages_are_refused() -> None:
    """Ollama: `messages: []` -> 400. Same."""
    assert rejects("chat.completions", chat_request(messages=[])).param == "messages"


# --- response mapping (10.2) ---------------------------------------------------------------------

def test_ids_are_unique_and_the_model_is_the_public_name() -> None:
    """Ollama: `id` = "chatcmpl-" + a number below 999 (collides), `model` = the request's string. Differs on
    purpose: the id is the gateway's unique one; `model` is the public name, never the node's tag."""
    out = answer(ollama_chat("Hi"))
    assert out["id"] == "chatcmpl-1" and out["model"] == "privaterouter/qwen-fast" and out["object"] == \
        "chat.completion"


def test_thinking_is_returned_as_reasoning_and_reasoning_content() -> None:
    """Ollama: `thinking` -> `message.reasoning`. Same, plus `reasoning_content` (DeepSeek's name) for the
    clients that read that one."""
    message = answer(ollama_chat("A", thinking="hm"))["choices"][0]["message"]
    assert message["reasoning"] == message["reasoning_content"] == "hm"


def test_tool_calls_and_finish_reason() -> None:
    """Ollama: calls -> `{id, index, type, function{name, arguments: JSON string}}`, `stop` -> `tool_calls`,
    `content` "". Same, except `content` is null with tool calls (OpenAI's own shape) and `index` appears in
    streams only (as in OpenAI's non-streaming answers)."""
    out = answer(ollama_chat("", tool_calls=[ollama_call("get_weather", {"city": "Paris"})]), tools=[WEATHER])
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [{"id": "call_ab12cd34", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Paris"}'}}]


def test_missing_call_ids_are_generated() -> None:
    """Ollama (before 0.12.10): calls without ids. We generate `call_...` ids, unique per call."""
    calls = [ollama_call("get_weather", {}, 0, None), ollama_call("get_weather", {}, 1, None)]
    ids = [c["id"] for c in answer(ollama_chat("", tool_calls=calls), tools=[WEATHER])["choices"][0]["message"][
        "tool_calls"]]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_finish_reasons() -> None:
    """Ollama: `length` kept, empty done_reason -> null. Differs on purpose for the empty case (and for
    `load`/`unload`): `stop`, since OpenAI's finish_reason is never null on a finished choice."""
    assert answer(ollama_chat("x", done_reason="length"))["choices"][0]["finish_reason"] == "length"
    assert answer(ollama_chat("x", done_reason=None))["choices"][0]["finish_reason"] == "stop"


def test_usage() -> None:
    """Ollama: prompt_eval_count/eval_count -> usage, total = sum. Same; a missing count is estimated (billed
    exactly once either way)."""
    assert answer(ollama_chat("x", prompt_eval_count=11, eval_count=7))["usage"] == {
        "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


# --- streaming (10.3) ----------------------------------------------------------------------------

def test_stream_sequence() -> None:
    """Ollama: first chunk carries role, content deltas, a chunk with both thinking and content is split
    (reasoning first), a finish chunk with `delta: {}`, then the usage chunk (`choices: []`) and [DONE].
    Same; our first chunk carries only the role, and every chunk has the same id and `created`."""
    out = chunks([ollama_chat("", thinking="hm", done=False), ollama_chat("A", thinking="!", done=False),
                  ollama_chat("")], stream_options={"include_usage": True})
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in out]
    assert deltas == [{"role": "assistant", "content": ""}, {"reasoning_content": "hm", "reasoning": "hm"},
                      {"reasoning_content": "!", "reasoning": "!"}, {"content": "A"}, {}, None]
    assert out[-2]["choices"][0]["finish_reason"] == "stop" and out[-1]["usage"]["total_tokens"] == 18
    assert len({(c["id"], c["created"]) for c in out}) == 1


def test_streamed_tool_calls_have_ids_and_increasing_indices() -> None:
    """Ollama: tool calls streamed whole with `index` and `id`; `stop` -> `tool_calls` when any was streamed.
    Same; indices count across chunks."""
    out = chunks([ollama_chat("", tool_calls=[ollama_call("get_weather", {}, 0, "c1")], done=False),
                  ollama_chat("", tool_calls=[ollama_call("get_weather", {}, 0, "c2")], done=False),
                  ollama_chat("")], tools=[WEATHER])
    calls = [call for c in out for call in c["choices"][0]["delta"].get("tool_calls", ())]
    assert [(c["index"], c["id"]) for c in calls] == [(0, "c1"), (1, "c2")]
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_usage_on_non_final_chunks() -> None:
    """Ollama (completions): a zeroed `usage` object on every chunk. Differs on purpose: `"usage": null`,
    as OpenAI sends, so clients summing usage do not count zeros as data."""
    out = chunks([ollama_chat("A", done=False), ollama_chat("")], stream_options={"include_usage": True})
    assert [c["usage"] for c in out[:-1]] == [None] * (len(out) - 1)


def test_event_names_are_absent_in_chat_streams() -> None:
    """Ollama: `data:` frames only, no `event:` lines, [DONE] last. Same."""
    enc = stream_encoder(prepared(stream=True), QWEN, response_id="c", created=1)
    raw = enc.feed(ollama_chat("A", done=False)) + enc.feed(ollama_chat("")) + enc.finish()
    assert {event for event, _ in sse_events(raw)} == {None} and raw.endswith(b"data: [DONE]\n\n")


# --- embeddings (10.5) ---------------------------------------------------------------------------

EMBED = target("embedding", kind="embedding", tag="nomic-embed-text:latest", public_name="privaterouter/embed",
               context=2048, dimensions=768)


def test_embeddings_request() -> None:
    """Ollama: input string or list, `dimensions` forwarded, `truncate` not sent (server default true: an
    over-long input is silently cut). Differs on purpose: `truncate: false`, so it is a 400 instead."""
    body = prepare("embeddings", {"model": "e", "input": ["a", "b"], "dimensions": 8}, EMBED).body
    assert body == {"model": "nomic-embed-text:latest", "input": ["a", "b"], "dimensions": 8, "truncate": False}


def test_embeddings_response_and_base64() -> None:
    """Ollama: `{object: list, data: [{object: embedding, embedding, index}], model, usage}`, base64 =
    little-endian float32. Same (model = the public name)."""
    prep = prepare("embeddings", {"model": "e", "input": "a", "encoding_format": "base64"}, EMBED)
    out, _ = render_response(prep, EMBED, {"embeddings": [[1.0]], "prompt_eval_count": 2}, response_id="e",
                             created=1)
    assert out["data"] == [{"object": "embedding", "index": 0, "embedding": "AACAPw=="}]
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2} and out["model"] == "privaterouter/embed"


def test_token_arrays_are_refused() -> None:
    """Ollama: token arrays unsupported (400). Same, with a message naming LangChain's switch."""
    err = rejects("embeddings", {"model": "e", "input": [[1, 2]]}, EMBED)
    assert "check_embedding_ctx_length=False" in err.message


# --- Responses API (10.7) -----------------------------------------------------------------------

def test_responses_items_map_like_ollamas() -> None:
    """Ollama: `function_call` items merge into the preceding assistant message (arguments string -> object),
    `function_call_output` -> a tool message, tools `{type, name, parameters}` -> `{type, function}`,
    `instructions` -> a leading system message. Same; `tool_choice` differs on purpose (enforced, see above)."""
    body = prepare("responses", {"model": "m", "instructions": "Be brief.", "tools": [
        {"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}], "input": [
        user("w?"), {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"a"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]}, QWEN).body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert body["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"city": "a"}
    assert body["tools"][0]["function"]["name"] == "get_weather"


def test_responses_output_items() -> None:
    """Ollama: a reasoning item, then function_call items (`fc_<id>_<i>`, call_id, name, arguments) or one
    message item. Same ids and order; the reasoning item carries the text as `reasoning_text` content rather
    than in `encrypted_content` (ours is not encrypted and clients display it)."""
    prep = prepare("responses", {"model": "m", "input": "w?", "tools": [
        {"type": "function", "name": "get_weather"}]}, QWEN)
    out, _ = render_response(prep, QWEN, ollama_chat("", thinking="hm", tool_calls=[
        ollama_call("get_weather", {"city": "a"}, 0, "c1")]), response_id="resp_x", created=1)
    assert [(i["type"], i["id"]) for i in out["output"]] == [("reasoning", "rs_x"), ("function_call", "fc_x_0")]
    assert orjson.loads(out["output"][1]["arguments"]) == {"city": "a"} and out["output"][1]["call_id"] == "c1"


# --- errors (10.8) -------------------------------------------------------------------------------

def test_upstream_refusals_are_not_relayed_verbatim() -> None:
    """Ollama: its own error text as `message` (naming tags like registry.ollama.ai/library/qwen3:latest).
    Differs on purpose: stable messages naming the public model, the parameter in `param`."""
    from providers.openai.upstream_errors import refusal

    error = refusal("registry.ollama.ai/library/qwen3:latest does not support tools", "privaterouter/qwen-fast")
    assert error.param == "tools" and "qwen3" not in error.message
