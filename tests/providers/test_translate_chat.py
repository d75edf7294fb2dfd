"""Chat Completions request -> /api/chat request: one test per mapping row, and every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from providers.base import prepare
from providers.families import FAMILIES, Family
from providers.tokens import IMAGE_TOKENS
from tests.providers.translate_helpers import PNG_B64, PNG_URL, chat_request, rejects, target, user


def native(tgt: Any = None, **kw: Any) -> dict[str, Any]:
    return prepare("chat.completions", chat_request(**kw), tgt or target()).body


def assistant_call(call_id: str | None = "call_1", name: str = "get_weather", arguments: Any = '{"city":"Tokyo"}'
                   ) -> dict[str, Any]:
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        call["id"] = call_id
    return {"role": "assistant", "content": None, "tool_calls": [call]}


WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                                   "parameters": {"type": "object",
                                                                  "properties": {"city": {"type": "string"}},
                                                                  "required": ["city"]},
                                                   "strict": True}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


# --- model, endpoint, stream ----------------------------------------------------------------------

def test_model_becomes_the_ollama_tag_never_the_public_name() -> None:
    body = native(target(tag="qwen3:latest"))
    assert body["model"] == "qwen3:latest"


def test_prepared_request_points_at_api_chat() -> None:
    prepared = prepare("chat.completions", chat_request(max_tokens=20), target())
    assert (prepared.endpoint, prepared.ollama_path) == ("chat.completions", "/api/chat")
    assert prepared.max_output_tokens == 20


def test_stream_is_always_explicit_false_by_default() -> None:
    prepared = prepare("chat.completions", chat_request(), target())
    assert prepared.body["stream"] is False and prepared.stream is False and prepared.include_usage is False


def test_stream_true_and_include_usage() -> None:
    prepared = prepare("chat.completions", chat_request(stream=True, stream_options={"include_usage": True}),
                       target())
    assert prepared.body["stream"] is True and prepared.stream and prepared.include_usage


def test_stream_options_without_stream_is_refused() -> None:
    assert rejects("chat.completions", chat_request(stream_options={"include_usage": True})).param == "stream_options"


def test_stream_must_be_a_boolean() -> None:
    assert rejects("chat.completions", chat_request(stream="yes")).param == "stream"


def test_keep_alive_and_truncation_are_left_to_ollama() -> None:
    body = native()
    assert "keep_alive" not in body and "truncate" not in body and "shift" not in body


def test_embedding_model_cannot_chat() -> None:
    assert rejects("chat.completions", chat_request(), target("embedding", kind="embedding")).param == "model"


# --- messages ------------------------------------------------------------------------------------

@pytest.mark.parametrize("role,expected", [("system", "system"), ("developer", "system"), ("user", "user")])
def test_text_roles_map(role: str, expected: str) -> None:
    body = native(messages=[{"role": role, "content": "x"}])
    assert body["messages"] == [{"role": expected, "content": "x"}]


@pytest.mark.parametrize("messages", [None, [], "hi", {"role": "user"}])
def test_messages_missing_empty_or_not_a_list_is_refused(messages: Any) -> None:
    body = chat_request()
    if messages is None:
        del body["messages"]
    else:
        body["messages"] = messages
    assert rejects("chat.completions", body).param == "messages"


@pytest.mark.parametrize("role", ["function", "robot", "USER", 3])
def test_unknown_role_is_refused_naming_it(role: Any) -> None:
    err = rejects("chat.completions", chat_request(messages=[user(), {"role": role, "content": "x"}]))
    assert err.param == "messages[1].role"


def test_missing_role_is_refused() -> None:
    assert rejects("chat.completions", chat_request(messages=[{"content": "x"}])).param == "messages[0].role"


def test_message_must_be_an_object() -> None:
    assert rejects("chat.completions", chat_request(messages=["hi"])).param == "messages[0]"


def test_text_parts_are_joined_into_one_message() -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert native(messages=[{"role": "user", "content": parts}])["messages"] == [
        {"role": "user", "content": "first\nsecond"}]


def test_image_data_url_becomes_bare_base64() -> None:
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    body = native(target("gemma"), messages=[{"role": "user", "content": parts}])
    assert body["messages"] == [{"role": "user", "content": "What is this?", "images": [PNG_B64]}]


@pytest.mark.parametrize("prefix", ["data:image/jpeg;base64,", "data:image/webp;base64,", "data:;base64,"])
def test_other_accepted_data_url_kinds(prefix: str) -> None:
    parts = [{"type": "image_url", "image_url": prefix + PNG_B64}]  # bare-string image_url form, as Ollama accepts
    assert native(target("gemma"), messages=[{"role": "user", "content": parts}])["messages"][0]["images"] == [PNG_B64]


@pytest.mark.parametrize("url", ["https://example.invalid/cat.png", "http://example.invalid/cat.png",
                                 "data:image/png;base64,@@@not-base64@@@", "data:text/plain;base64,aGk=",
                                 "file:///etc/passwd", "data:image/png;base64,"])
def test_bad_image_urls_are_refused_naming_the_part(url: str) -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    err = rejects("chat.completions", chat_request(messages=[{"role": "user", "content": parts}]), target("gemma"))
    assert err.param == "messages[0].content[1].image_url"


def test_images_on_a_model_whose_node_has_no_vision_are_refused() -> None:
    parts = [{"type": "image_url", "image_url": {"url": PNG_URL}}]
    err = rejects("chat.completions", chat_request(messages=[user(), {"role": "user", "content": parts}]),
                  target("llama"))
    assert err.param == "messages[1].content[0]"


@pytest.mark.parametrize("part", [{"type": "input_audio", "input_audio": {"data": "aGk=", "format": "wav"}},
                                  {"type": "file", "file": {"file_id": "f"}}])
def test_audio_and_file_parts_are_refused(part: dict[str, Any]) -> None:
    err = rejects("chat.completions", chat_request(messages=[{"role": "user", "content": [part]}]), target("gemma"))
    assert err.param == "messages[0].content[0].type"


def test_images_only_in_user_messages() -> None:
    parts = [{"type": "image_url", "image_url": {"url": PNG_URL}}]
    err = rejects("chat.completions", chat_request(messages=[{"role": "system", "content": parts}, user()]),
                  target("gemma"))
    assert err.param == "messages[0].content[0].type"


def test_content_of_wrong_type_is_refused() -> None:
    assert rejects("chat.completions", chat_request(messages=[{"role": "user", "content": 5}])).param == \
        "messages[0].content"


def test_null_content_without_tool_calls_is_refused() -> None:
    err = rejects("chat.completions", chat_request(messages=[user(), {"role": "assistant", "content": None}]))
    assert err.param == "messages[1].content"


def test_null_user_content_is_refused() -> None:
    assert rejects("chat.completions", chat_request(messages=[{"role": "user", "content": None}])).param == \
        "messages[0].content"


def test_assistant_tool_call_arguments_string_becomes_object_and_id_is_kept() -> None:
    messages = [user(), assistant_call("call_xyz"), {"role": "tool", "tool_call_id": "call_xyz", "content": "22C"}]
    body = native(messages=messages)
    assert body["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_xyz", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}]}


def test_empty_arguments_string_is_an_empty_object() -> None:
    call = native(messages=[user(), assistant_call(arguments="")])["messages"][1]["tool_calls"][0]
    assert call["function"]["arguments"] == {}


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_unparsable_or_non_object_arguments_are_refused(arguments: str) -> None:
    err = rejects("chat.completions", chat_request(messages=[user(), assistant_call(arguments=arguments)]))
    assert err.param == "messages[1].tool_calls[0].function.arguments"


def test_tool_calls_without_ids_get_unique_ones_that_tool_results_can_still_use() -> None:
    two = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "a", "arguments": "{}"}},
        {"type": "function", "function": {"name": "b", "arguments": "{}"}}]}
    calls = native(messages=[user(), two])["messages"][1]["tool_calls"]
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert [c["function"]["index"] for c in calls] == [0, 1]


def test_tool_message_keeps_call_id_and_gets_the_name_of_its_call() -> None:
    messages = [user(), assistant_call("call_1", name="get_weather"),
                {"role": "tool", "tool_call_id": "call_1", "content": "22C"}]
    assert native(messages=messages)["messages"][2] == {
        "role": "tool", "content": "22C", "tool_call_id": "call_1", "tool_name": "get_weather"}


def test_tool_message_with_text_parts() -> None:
    messages = [user(), assistant_call("call_1"),
                {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "22C"}]}]
    assert native(messages=messages)["messages"][2]["content"] == "22C"


def test_tool_message_falls_back_to_its_own_name() -> None:
    messages = [user(), {"role": "tool", "tool_call_id": "call_9", "name": "lookup", "content": "x"}]
    assert native(messages=messages)["messages"][1]["tool_name"] == "lookup"


def test_tool_message_matching_no_call_is_refused() -> None:
    err = rejects("chat.completions", chat_request(messages=[user(), {"role": "tool", "tool_call_id": "nope",
                                                                     "content": "x"}]))
    assert err.param == "messages[1].tool_call_id"


def test_tool_message_without_call_id_is_refused() -> None:
    err = rejects("chat.completions", chat_request(messages=[user(), {"role": "tool", "content": "x"}]))
    assert err.param == "messages[1].tool_call_id"


def test_assistant_reasoning_is_sent_back_as_thinking() -> None:
    messages = [user(), {"role": "assistant", "content": "4", "reasoning_content": "2+2"}, user("and 3+3?")]
    assert native(messages=messages)["messages"][1] == {"role": "assistant", "content": "4", "thinking": "2+2"}


def test_assistant_tool_call_of_other_type_is_refused() -> None:
    bad = {"role": "assistant", "content": None, "tool_calls": [{"type": "custom", "custom": {"name": "x"}}]}
    assert rejects("chat.completions", chat_request(messages=[user(), bad])).param == "messages[1].tool_calls[0].type"


# --- sampling options ----------------------------------------------------------------------------

def test_options_hold_only_what_was_given_and_the_context_size() -> None:
    # Ollama's own /v1 layer forces temperature and top_p to 1.0; we leave the Modelfile's defaults.
    assert native(target(context=8192))["options"] == {"num_ctx": 8192}


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_output_cap_becomes_num_predict(key: str) -> None:
    assert native(**{key: 64})["options"]["num_predict"] == 64


def test_both_caps_equal_is_fine_different_is_refused() -> None:
    assert native(max_tokens=5, max_completion_tokens=5)["options"]["num_predict"] == 5
    assert rejects("chat.completions", chat_request(max_tokens=5, max_completion_tokens=6)).param == \
        "max_completion_tokens"


@pytest.mark.parametrize("value", [0, -1, "10", 2.5, True])
def test_bad_max_tokens_is_refused(value: Any) -> None:
    assert rejects("chat.completions", chat_request(max_tokens=value)).param == "max_tokens"


@pytest.mark.parametrize("key,value", [("temperature", 0), ("temperature", 1.3), ("temperature", 2), ("top_p", 0.5),
                                       ("top_p", 1), ("presence_penalty", -2), ("frequency_penalty", 1.5),
                                       ("seed", 42), ("seed", -1)])
def test_sampling_values_pass_into_options(key: str, value: Any) -> None:
    assert native(**{key: value})["options"][key] == value


@pytest.mark.parametrize("key,value", [("temperature", -0.1), ("temperature", 2.01), ("temperature", "hot"),
                                       ("temperature", True), ("top_p", 1.5), ("top_p", -1), ("top_p", [1]),
                                       ("presence_penalty", 2.5), ("frequency_penalty", -3), ("seed", 1.5),
                                       ("seed", "7"), ("seed", 2**64), ("presence_penalty", float("nan"))])
def test_out_of_range_or_mistyped_sampling_values_are_refused(key: str, value: Any) -> None:
    assert rejects("chat.completions", chat_request(**{key: value})).param == key


def test_stop_string_becomes_a_list() -> None:
    assert native(stop="\n\n")["options"]["stop"] == ["\n\n"]


def test_stop_list_is_kept() -> None:
    assert native(stop=["a", "b", "c", "d"])["options"]["stop"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize("stop,param", [(["a", "b", "c", "d", "e"], "stop"), (["a", 1], "stop[1]"),
                                        ({"s": 1}, "stop"), ("", "stop"), (["a", ""], "stop[1]")])
def test_bad_stop_is_refused(stop: Any, param: str) -> None:
    assert rejects("chat.completions", chat_request(stop=stop)).param == param


def test_family_and_model_options_sit_under_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, "tuned", Family("tuned", options={"top_k": 20, "temperature": 0.6}))
    tgt = target("tuned", options={"temperature": 0.7, "num_ctx": 4096, "repeat_penalty": 1.1})
    assert native(tgt, temperature=0.2)["options"] == {
        "top_k": 20, "temperature": 0.2, "num_ctx": 4096, "repeat_penalty": 1.1}


# --- response_format, reasoning_effort --------------------------------------------------------------

def test_response_format_text_sends_no_format() -> None:
    assert "format" not in native(response_format={"type": "text"})


def test_response_format_json_object_becomes_json() -> None:
    assert native(response_format={"type": "json_object"})["format"] == "json"


def test_response_format_json_schema_becomes_the_schema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    body = native(response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema,
                                                                          "strict": True}})
    assert body["format"] == schema


@pytest.mark.parametrize("fmt,param", [
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "response_format.json_schema.schema"),
    ({"type": "json_schema"}, "response_format.json_schema"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": "object"}}, "response_format.json_schema.schema"),
    ({"type": "yaml"}, "response_format.type"),
    ({}, "response_format.type"),
    ("json", "response_format"),
])
def test_bad_response_format_is_refused(fmt: Any, param: str) -> None:
    assert rejects("chat.completions", chat_request(response_format=fmt)).param == param


@pytest.mark.parametrize("effort,think", [("none", False), ("minimal", True), ("low", True), ("medium", True),
                                          ("high", True), ("xhigh", True), ("max", True)])
def test_reasoning_effort_on_a_thinking_family(effort: str, think: bool) -> None:
    assert native(target("qwen"), reasoning_effort=effort)["think"] is think


def test_no_reasoning_effort_leaves_thinking_to_ollama() -> None:
    assert "think" not in native(target("qwen"))


def test_reasoning_effort_none_on_a_model_that_does_not_think_sends_nothing() -> None:
    assert "think" not in native(target("llama"), reasoning_effort="none")


def test_reasoning_effort_on_a_model_that_does_not_think_is_refused() -> None:
    assert rejects("chat.completions", chat_request(reasoning_effort="high"), target("llama")).param == \
        "reasoning_effort"


@pytest.mark.parametrize("effort", ["ultra", "HIGH", 3, ["low"]])
def test_unknown_reasoning_effort_is_refused(effort: Any) -> None:
    assert rejects("chat.completions", chat_request(reasoning_effort=effort)).param == "reasoning_effort"


# --- tools ---------------------------------------------------------------------------------------

def test_tools_pass_through_without_strict() -> None:
    tools = native(tools=[WEATHER_TOOL])["tools"]
    function = dict(WEATHER_TOOL["function"])
    del function["strict"]
    assert tools == [{"type": "function", "function": function}]


def test_tool_without_parameters_gets_an_empty_object_schema() -> None:
    assert native(tools=[TIME_TOOL])["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}


@pytest.mark.parametrize("name", ["has space", "", "x" * 65, "dots.not.ok", 7])
def test_invalid_tool_name_is_refused(name: Any) -> None:
    tool = {"type": "function", "function": {"name": name}}
    assert rejects("chat.completions", chat_request(tools=[TIME_TOOL, tool])).param == "tools[1].function.name"


@pytest.mark.parametrize("tool,param", [({"type": "custom", "custom": {"name": "x"}}, "tools[0].type"),
                                        ({"type": "function"}, "tools[0].function"),
                                        ({"type": "function", "function": {"name": "x", "parameters": []}},
                                         "tools[0].function.parameters"),
                                        ("get_time", "tools[0]")])
def test_malformed_tools_are_refused(tool: Any, param: str) -> None:
    assert rejects("chat.completions", chat_request(tools=[tool])).param == param


def test_tools_on_a_model_whose_node_has_no_tools_are_refused() -> None:
    err = rejects("chat.completions", chat_request(tools=[TIME_TOOL]), target("deepseek"))
    assert err.param == "tools" and "privaterouter/deepseek-test" in err.message


def test_tool_choice_none_sends_no_tools() -> None:
    assert "tools" not in native(tools=[WEATHER_TOOL], tool_choice="none")


@pytest.mark.parametrize("tool_choice", ["auto", "required", None])
def test_tool_choice_auto_and_required_send_every_tool(tool_choice: Any) -> None:
    assert len(native(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=tool_choice)["tools"]) == 2


def test_named_tool_choice_sends_only_that_tool() -> None:
    body = native(tools=[WEATHER_TOOL, TIME_TOOL], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]


@pytest.mark.parametrize("tool_choice,param", [({"type": "function", "function": {"name": "nope"}}, "tool_choice"),
                                               ("sometimes", "tool_choice"),
                                               ({"type": "allowed_tools", "allowed_tools": {}}, "tool_choice.type")])
def test_unusable_tool_choice_is_refused(tool_choice: Any, param: str) -> None:
    assert rejects("chat.completions", chat_request(tools=[WEATHER_TOOL], tool_choice=tool_choice)).param == param


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_forcing_a_tool_without_tools_is_refused(tool_choice: Any) -> None:
    assert rejects("chat.completions", chat_request(tool_choice=tool_choice)).param == "tool_choice"


def test_tool_choice_auto_without_tools_is_fine() -> None:
    assert "tools" not in native(tool_choice="auto", tools=[])


def test_parallel_tool_calls_is_accepted_and_type_checked() -> None:
    assert native(tools=[WEATHER_TOOL], parallel_tool_calls=False)["tools"]
    assert rejects("chat.completions", chat_request(parallel_tool_calls="no")).param == "parallel_tool_calls"


# --- refused and ignored parameters ----------------------------------------------------------------

@pytest.mark.parametrize("key,value", [
    ("n", 2), ("n", 0), ("logprobs", True), ("top_logprobs", 3), ("logit_bias", {"50256": -100}),
    ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
    ("prediction", {"type": "content", "content": "x"}), ("web_search_options", {}),
    ("functions", [{"name": "f"}]), ("function_call", "auto"),
])
def test_parameters_that_cannot_be_honoured_are_refused_by_name(key: str, value: Any) -> None:
    assert rejects("chat.completions", chat_request(**{key: value})).param == key


@pytest.mark.parametrize("key,value", [("n", 1), ("logprobs", False), ("logit_bias", {}), ("modalities", ["text"]),
                                       ("user", "u-1"), ("metadata", {"k": "v"}), ("store", True),
                                       ("service_tier", "auto"), ("some_future_field", {"x": 1}), ("audio", None)])
def test_harmless_and_unknown_parameters_are_accepted(key: str, value: Any) -> None:
    assert native(**{key: value})["messages"] == [user()]


# --- size estimates and the context check ------------------------------------------------------------

def test_prompt_estimate_is_conservative() -> None:
    text = "word " * 400  # about 400 tokens with any common tokenizer
    prepared = prepare("chat.completions", chat_request(messages=[user(text)]), target())
    assert 400 < prepared.prompt_tokens_estimate < 1000


def test_each_image_adds_a_fixed_cost() -> None:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": PNG_URL}}]
    plain = prepare("chat.completions", chat_request(messages=[user("x")]), target("gemma"))
    with_image = prepare("chat.completions", chat_request(messages=[{"role": "user", "content": parts}]),
                         target("gemma"))
    assert with_image.prompt_tokens_estimate - plain.prompt_tokens_estimate == IMAGE_TOKENS


def test_tools_count_towards_the_prompt() -> None:
    plain = prepare("chat.completions", chat_request(), target())
    with_tools = prepare("chat.completions", chat_request(tools=[WEATHER_TOOL]), target())
    assert with_tools.prompt_tokens_estimate > plain.prompt_tokens_estimate + 20


def test_prompt_over_the_context_is_refused() -> None:
    err = rejects("chat.completions", chat_request(messages=[user("word " * 2000)]), target(context=1024))
    assert (err.param, err.code) == ("messages", "context_length_exceeded")


def test_max_tokens_can_push_a_fitting_prompt_over_the_context() -> None:
    prepare("chat.completions", chat_request(max_tokens=900), target(context=1024))
    err = rejects("chat.completions", chat_request(max_tokens=1100), target(context=1024))
    assert err.code == "context_length_exceeded"
