"""/v1/responses (text profile) <-> /api/chat: request, answer object and the streaming event sequence."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from providers.base import ModelTarget, PreparedRequest, prepare, render_response, stream_encoder
from tests.providers.translate_helpers import ollama_chat, rejects, sse_events, target

RID = "resp_0123abcd"


def request(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "input": "Tell me a joke"}
    body.update(kw)
    return body


def prepared(tgt: ModelTarget | None = None, **kw: Any) -> PreparedRequest:
    return prepare("responses", request(**kw), tgt or target("llama"))


def render(ollama: dict[str, Any], tgt: ModelTarget | None = None, **kw: Any) -> dict[str, Any]:
    tgt = tgt or target("llama")
    answer, _ = render_response(prepared(tgt, **kw), tgt, ollama, response_id=RID, created=1700000000)
    return answer


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event, data in sse_events(raw):
        assert event is not None
        payload = orjson.loads(data)
        assert payload["type"] == event
        out.append((event, payload))
    return out


def stream(chunks: list[dict[str, Any]], tgt: ModelTarget | None = None, **kw: Any) -> bytes:
    tgt = tgt or target("llama")
    enc = stream_encoder(prepared(tgt, stream=True, **kw), tgt, response_id=RID, created=1700000000)
    return b"".join(enc.feed(c) for c in chunks) + enc.finish()


# --- request ---------------------------------------------------------------------------------------

def test_string_input_is_one_user_message() -> None:
    prep = prepared(target("llama", tag="llama3.2:latest", context=4096))
    assert (prep.endpoint, prep.ollama_path, prep.stream) == ("responses", "/api/chat", False)
    assert prep.body == {"model": "llama3.2:latest", "messages": [{"role": "user", "content": "Tell me a joke"}],
                         "stream": False, "options": {"num_ctx": 4096}}


def test_instructions_become_a_leading_system_message() -> None:
    assert prepared(instructions="Be brief.").body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_message_items_with_text_parts() -> None:
    items = [{"role": "developer", "content": "Rules."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
             {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
              "content": [{"type": "output_text", "text": "Hello!", "annotations": []}]},
             {"type": "reasoning", "id": "rs_1", "summary": []},
             {"role": "user", "content": "And now?"}]
    assert prepared(input=items).body["messages"] == [
        {"role": "system", "content": "Rules."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And now?"}]


def test_sampling_and_output_cap() -> None:
    options = prepared(max_output_tokens=50, temperature=0.3, top_p=0.9).body["options"]
    assert (options["num_predict"], options["temperature"], options["top_p"]) == (50, 0.3, 0.9)


def test_stream_flag_is_explicit() -> None:
    prep = prepared(stream=True)
    assert prep.stream and prep.body["stream"] is True


def test_reasoning_effort_maps_to_think_on_thinking_families() -> None:
    assert prepared(target("qwen"), reasoning={"effort": "none"}).body["think"] is False
    assert prepared(target("qwen"), reasoning={"effort": "high", "summary": "auto"}).body["think"] is True


def test_reasoning_on_a_family_without_thinking_is_refused() -> None:
    assert rejects("responses", request(reasoning={"effort": "low"}), target("llama")).param == "reasoning.effort"


def test_text_format_json_schema_becomes_the_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = prepared(text={"format": {"type": "json_schema", "name": "a", "schema": schema}}).body
    assert body["format"] == schema


def test_text_format_json_object() -> None:
    assert prepared(text={"format": {"type": "json_object"}}).body["format"] == "json"


@pytest.mark.parametrize("key,value,param", [
    ("tools", [{"type": "web_search"}], "tools[0].type"),
    ("tools", [{"type": "function", "name": "bad name"}], "tools[0].name"),
    ("tool_choice", {"type": "function", "name": "nope"}, "tool_choice"),
    ("tool_choice", "required", "tool_choice"),
    ("previous_response_id", "resp_1", "previous_response_id"),
    ("conversation", "conv_1", "conversation"),
    ("background", True, "background"),
    ("store", True, "store"),
    ("prompt", {"id": "pmpt_1"}, "prompt"),
    ("include", ["message.output_text.logprobs"], "include"),  # this node's version is unknown
    ("include", ["file_search_call.results"], "include[0]"),
    ("top_logprobs", 2, "top_logprobs"),
    # llama3.2's node lists no vision.
    ("input", [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]}],
     "input[0].content[0]"),
    ("input", [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}], "input[0].content[0].file_id"),
    ("input", [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}], "input[0].content[0].type"),
    ("input", [{"type": "function_call_output", "call_id": "c", "output": "x"}], "input[0].call_id"),
    ("input", [{"type": "item_reference", "id": "x"}], "input[0].type"),
    ("input", [{"role": "tool", "content": "x"}], "input[0].role"),
    ("input", [], "input"),
    ("input", 5, "input"),
    ("text", {"format": {"type": "json_schema", "schema": {}}}, "text.format.name"),
    ("text", {"verbosity": "low"}, "text.verbosity"),
    ("max_output_tokens", 0, "max_output_tokens"),
    ("temperature", 3, "temperature"),
    ("instructions", ["x"], "instructions"),
])
def test_unsupported_features_are_refused_by_name(key: str, value: Any, param: str) -> None:
    assert rejects("responses", request(**{key: value}), target("llama")).param == param


@pytest.mark.parametrize("key,value", [("store", False), ("tools", []), ("tool_choice", "auto"),
                                       ("background", False), ("include", ["reasoning.encrypted_content"]),
                                       ("truncation", "auto"), ("metadata", {"a": "b"}), ("user", "u"),
                                       ("parallel_tool_calls", True), ("stream_options", None)])
def test_harmless_values_are_accepted(key: str, value: Any) -> None:
    assert prepared(**{key: value}).body["messages"]


def test_missing_input_is_refused() -> None:
    assert rejects("responses", {"model": "m"}, target("llama")).param == "input"


# --- answer ----------------------------------------------------------------------------------------

def test_response_object() -> None:
    answer = render(ollama_chat("Why did the GPU cross the road?", prompt_eval_count=10, eval_count=8),
                    instructions="Be funny", max_output_tokens=100, temperature=0.7)
    assert answer["id"] == RID and answer["object"] == "response" and answer["created_at"] == 1700000000
    assert answer["status"] == "completed" and answer["incomplete_details"] is None and answer["error"] is None
    assert answer["model"] == "privaterouter/llama-test"
    assert (answer["instructions"], answer["max_output_tokens"], answer["temperature"], answer["top_p"]) == (
        "Be funny", 100, 0.7, None)
    assert answer["output"] == [{"id": "msg_0123abcd", "type": "message", "status": "completed", "role": "assistant",
                                 "content": [{"type": "output_text", "text": "Why did the GPU cross the road?",
                                              "annotations": [], "logprobs": []}]}]
    assert answer["usage"] == {"input_tokens": 10,
                               "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                               "output_tokens": 8, "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": 18}


def test_length_makes_the_response_incomplete() -> None:
    answer = render(ollama_chat("cut", done_reason="length"), max_output_tokens=1)
    assert answer["status"] == "incomplete" and answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["output"][0]["status"] == "incomplete"


def test_thinking_becomes_a_reasoning_item_first() -> None:
    answer = render(ollama_chat("42", thinking="Deep thought", eval_count=20), target("qwen"))
    assert [item["type"] for item in answer["output"]] == ["reasoning", "message"]
    assert answer["output"][0]["content"] == [{"type": "reasoning_text", "text": "Deep thought"}]
    assert 0 < answer["usage"]["output_tokens_details"]["reasoning_tokens"] <= 20


# --- streaming -------------------------------------------------------------------------------------

TEXT_SEQUENCE = ["response.created", "response.in_progress", "response.output_item.added",
                 "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
                 "response.output_text.done", "response.content_part.done", "response.output_item.done",
                 "response.completed"]


def test_stream_event_sequence_and_sequence_numbers() -> None:
    evs = events(stream([ollama_chat("Hel", done=False), ollama_chat("lo", done=False), ollama_chat("")]))
    assert [e for e, _ in evs] == TEXT_SEQUENCE
    assert [p["sequence_number"] for _, p in evs] == list(range(len(evs)))


def test_stream_payloads() -> None:
    evs = dict(events(stream([ollama_chat("Hel", done=False), ollama_chat("lo", eval_count=2)])))
    assert evs["response.created"]["response"]["status"] == "in_progress"
    assert evs["response.created"]["response"]["output"] == []
    assert evs["response.output_text.done"]["text"] == "Hello"
    assert evs["response.output_item.done"]["item"]["content"][0]["text"] == "Hello"
    final = evs["response.completed"]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["output_tokens"] == 2 and final["id"] == RID


def test_stream_deltas_carry_item_and_indexes() -> None:
    evs = events(stream([ollama_chat("Hi", done=False), ollama_chat("")]))
    delta = next(p for e, p in evs if e == "response.output_text.delta")
    assert delta == {"type": "response.output_text.delta", "item_id": "msg_0123abcd", "output_index": 0,
                     "content_index": 0, "delta": "Hi", "logprobs": [], "sequence_number": 4}


def test_stream_with_reasoning_opens_a_reasoning_item_first() -> None:
    evs = events(stream([ollama_chat("", thinking="Hmm", done=False), ollama_chat("Yes", done=False),
                         ollama_chat("")], target("qwen")))
    assert [e for e, _ in evs] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    message_added = [p for e, p in evs if e == "response.output_item.added"][1]
    assert message_added["output_index"] == 1
    final = evs[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]


def test_stream_without_text_still_closes_an_empty_message() -> None:
    evs = events(stream([ollama_chat("")]))
    assert [e for e, _ in evs] == [e for e in TEXT_SEQUENCE if e != "response.output_text.delta"]
    assert evs[-1][1]["response"]["output"][0]["content"][0]["text"] == ""


def test_stream_incomplete_at_the_limit() -> None:
    evs = events(stream([ollama_chat("cut", done_reason="length")], max_output_tokens=1))
    assert evs[-1][0] == "response.incomplete"
    assert evs[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_fail_emits_error_then_failed() -> None:
    tgt = target("llama")
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    enc.feed(ollama_chat("part", done=False))
    evs = events(enc.fail("upstream_error", "runner crashed"))
    assert [e for e, _ in evs] == ["error", "response.failed"]
    assert evs[0][1]["code"] == "upstream_error" and evs[0][1]["message"] == "runner crashed"
    failed = evs[1][1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "runner crashed"}
    assert enc.finish() == b"" and enc.feed(ollama_chat("x")) == b""


def test_fail_before_anything_still_announces_the_response() -> None:
    tgt = target("llama")
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    evs = events(enc.fail("upstream_timeout", "slow"))
    assert [e for e, _ in evs] == ["response.created", "response.in_progress", "error", "response.failed"]


def test_stream_usage_is_always_available() -> None:
    tgt = target("llama")
    prep = prepared(tgt, stream=True)
    enc = stream_encoder(prep, tgt, response_id=RID, created=0)
    enc.feed(ollama_chat("one", done=False))
    assert enc.usage().estimated and enc.usage().input_tokens == prep.prompt_tokens_estimate
    enc.feed(ollama_chat("", prompt_eval_count=3, eval_count=2))
    assert (enc.usage().input_tokens, enc.usage().output_tokens, enc.usage().estimated) == (3, 2, False)


# --- tools, tool results, images, reasoning items ---------------------------------------------------

WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CALL = {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def test_function_tools_and_a_named_choice_force_the_call_through_format() -> None:
    body = prepared(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}).body
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather",
                                                               "parameters": WEATHER["parameters"]}}]
    assert body["format"] == WEATHER["parameters"]


def test_function_call_items_and_outputs_become_assistant_calls_and_tool_messages() -> None:
    items = [{"role": "user", "content": "Weather?"},
             {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
             {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
             {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
             {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
             {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]}]
    messages = prepared(input=items, tools=[WEATHER]).body["messages"]
    assert messages[1]["thinking"] == "hm"
    assert [c["function"]["arguments"] for c in messages[1]["tool_calls"]] == [{"city": "Paris"}, {"city": "Rome"}]
    assert messages[2:] == [{"role": "tool", "content": "sunny", "tool_call_id": "c1", "tool_name": "get_weather"},
                            {"role": "tool", "content": "rain", "tool_call_id": "c2", "tool_name": "get_weather"}]


def test_bad_call_arguments_are_named_in_responses_terms() -> None:
    items = [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{nope"}]
    assert rejects("responses", request(input=items), target("llama")).param == "input[0].arguments"


def test_calls_in_the_answer_become_function_call_items() -> None:
    answer = render(ollama_chat("", tool_calls=[CALL]), tools=[WEATHER])
    assert [item["type"] for item in answer["output"]] == ["function_call"]
    assert answer["output"][0] | {"id": ""} == {"id": "", "type": "function_call", "status": "completed",
                                                "call_id": "call_1", "name": "get_weather",
                                                "arguments": '{"city":"Paris"}'}
    assert answer["tools"] == [WEATHER] and answer["status"] == "completed"


def test_a_streamed_call_closes_the_reasoning_item_and_has_its_argument_events() -> None:
    raw = stream([ollama_chat("", thinking="hm", done=False), ollama_chat("", tool_calls=[CALL], done=False),
                  ollama_chat("")], target("qwen"), tools=[WEATHER])
    kinds = [kind for kind, _ in events(raw)]
    assert kinds[kinds.index("response.reasoning_text.done"):] == [
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    completed = events(raw)[-1][1]["response"]
    assert [item["type"] for item in completed["output"]] == ["reasoning", "function_call"]
    assert [payload["sequence_number"] for _, payload in events(raw)] == list(range(len(kinds)))


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    two = [CALL, {**CALL, "id": "call_2"}]
    answer = render(ollama_chat("", tool_calls=two), tools=[WEATHER], parallel_tool_calls=False)
    assert [item["call_id"] for item in answer["output"]] == ["call_1"]
    assert answer["parallel_tool_calls"] is False


def test_logprobs_on_a_new_enough_node_reach_ollama_and_the_output_text() -> None:
    new = target("llama", ollama_version=(0, 12, 11))
    entry = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}
    body = prepared(new, include=["message.output_text.logprobs"], top_logprobs=3).body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 3)
    answer = render(ollama_chat("Hi", logprobs=[entry]), new, include=["message.output_text.logprobs"])
    assert answer["output"][0]["content"][0]["logprobs"] == [entry]
    raw = stream([ollama_chat("Hi", done=False, logprobs=[entry]), ollama_chat("")], new, top_logprobs=1)
    deltas = [payload for kind, payload in events(raw) if kind == "response.output_text.delta"]
    assert [d["logprobs"] for d in deltas] == [[entry]]
    assert events(raw)[-1][1]["response"]["output"][0]["content"][0]["logprobs"] == [entry]


def test_reasoning_round_trips_through_encrypted_content() -> None:
    qwen = target("qwen")
    answer = render(ollama_chat("A", thinking="hm"), qwen, include=["reasoning.encrypted_content"])
    reasoning = answer["output"][0]
    assert reasoning["encrypted_content"] == "hm"
    replay = [{"role": "user", "content": "q"}, {"type": "reasoning", "id": "rs_1", "summary": [],
                                                 "encrypted_content": "hm"},
              {"role": "assistant", "content": "A"}, {"role": "user", "content": "again"}]
    assert prepared(qwen, input=replay).body["messages"][1]["thinking"] == "hm"
    assert "encrypted_content" not in render(ollama_chat("A", thinking="hm"), qwen)["output"][0]
