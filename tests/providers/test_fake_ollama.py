"""The Ollama emulator over real loopback HTTP: framing, chat, generate, info endpoints and errors (§11)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from providers.ollama.fake import FakeConfig, create_fake_app
from tests.support.servers import serve_app

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count",
           "eval_duration")
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
HELLO = [{"role": "user", "content": "Say hello to the fake"}]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_app(create_fake_app(FakeConfig(tokens_per_reply=12))) as url:
        yield url


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    """The lines of an NDJSON body, asserting Ollama's framing on the way."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    body = response.content
    assert body.endswith(b"\n")
    lines = body[:-1].split(b"\n")
    assert all(lines), "blank line in NDJSON"
    return [orjson.loads(line) for line in lines]


def chat(http: httpx.Client, **payload: Any) -> httpx.Response:
    payload.setdefault("model", "llama3.2")
    payload.setdefault("messages", HELLO)
    return http.post("/api/chat", json=payload)


def whole(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body: dict[str, Any] = response.json()
    return body


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert set(body) == {"error"}
    message: str = body["error"]
    return message


# --- conventions ---------------------------------------------------------------------------------------------

def test_root_says_running_for_get_and_head(http: httpx.Client) -> None:
    assert http.get("/").text == "Ollama is running"
    head = http.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/plain")


def test_version(http: httpx.Client) -> None:
    assert http.get("/api/version").json() == {"version": "0.12.11"}
    assert http.head("/api/version").status_code == 200


def test_unknown_path_is_plain_text_404(http: httpx.Client) -> None:
    response = http.get("/api/nope")
    assert response.status_code == 404
    assert response.text == "404 page not found"
    assert response.headers["content-type"].startswith("text/plain")


def test_wrong_method_is_plain_text_405(http: httpx.Client) -> None:
    response = http.get("/api/chat")
    assert response.status_code == 405
    assert response.text == "405 method not allowed"


def test_stream_is_the_default_and_ndjson_framed(http: httpx.Client) -> None:
    lines = ndjson(chat(http))
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    for line in lines:
        assert line["message"]["role"] == "assistant" and isinstance(line["message"]["content"], str)
        assert RFC3339_UTC.match(line["created_at"])
        assert line["model"] == "llama3.2"
    for line in lines[:-1]:
        assert "done_reason" not in line and not set(METRICS) & set(line)
    assert lines[-1]["done_reason"] == "stop"
    assert all(isinstance(lines[-1][key], int) and lines[-1][key] > 0 for key in METRICS)


def test_stream_false_is_one_json_object_equal_to_the_concatenated_stream(http: httpx.Client) -> None:
    streamed = ndjson(chat(http))
    single = whole(chat(http, stream=False))
    assert single["done"] is True and single["done_reason"] == "stop"
    assert single["message"]["content"] == "".join(line["message"]["content"] for line in streamed)
    assert single["eval_count"] == streamed[-1]["eval_count"] == 12
    assert single["prompt_eval_count"] == streamed[-1]["prompt_eval_count"]


def test_tokens_are_words_with_leading_spaces_and_eval_count_counts_them(http: httpx.Client) -> None:
    lines = ndjson(chat(http))
    pieces = [line["message"]["content"] for line in lines[:-1]]
    assert len(pieces) == lines[-1]["eval_count"]
    assert not pieces[0].startswith(" ") and all(piece.startswith(" ") for piece in pieces[1:])


def test_replies_are_deterministic_and_depend_on_the_last_user_message(http: httpx.Client) -> None:
    first = whole(chat(http, stream=False))["message"]["content"]
    again = whole(chat(http, stream=False))["message"]["content"]
    other = whole(chat(http, stream=False, messages=[{"role": "user", "content": "Something else"}]))
    assert first == again != other["message"]["content"]


def test_prompt_eval_count_is_words_plus_template_overhead(http: httpx.Client) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]
    assert whole(chat(http, stream=False, messages=messages))["prompt_eval_count"] == (2 + 4) + (3 + 4)


def test_model_names_are_case_insensitive_with_implied_latest_and_echoed_verbatim(http: httpx.Client) -> None:
    for name in ("LLaMA3.2", "llama3.2:latest", "library/llama3.2"):
        assert whole(chat(http, model=name, stream=False))["model"] == name


def test_unknown_model_is_404_quoting_the_name(http: httpx.Client) -> None:
    assert error(chat(http, model="foo"), 404) == "model 'foo' not found"
    assert error(chat(http, model="qwen3:8b"), 404) == "model 'qwen3:8b' not found"
    assert error(http.post("/api/generate", json={"model": "Foo", "prompt": "x"}), 404) == "model 'Foo' not found"


def test_missing_model(http: httpx.Client) -> None:
    assert error(http.post("/api/chat", json={"messages": HELLO}), 400) == "model is required"
    assert error(http.post("/api/generate", json={"prompt": "x"}), 404) == "model '' not found"


def test_roles_are_case_insensitive(http: httpx.Client) -> None:
    lower = [{"role": "user", "content": "a b"}, {"role": "assistant", "content": "c"}]
    upper = [{"role": "USER", "content": "a b"}, {"role": "Assistant", "content": "c"}]
    expected = whole(chat(http, stream=False, messages=lower))
    got = whole(chat(http, stream=False, messages=upper))
    assert got["message"] == expected["message"] and got["prompt_eval_count"] == expected["prompt_eval_count"]


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    assert whole(chat(http, stream=False, mystery={"x": 1}))["done"] is True


# --- request errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/show"])
def test_empty_body_is_missing_request_body(http: httpx.Client, path: str) -> None:
    assert error(http.post(path, content=b""), 400) == "missing request body"


def test_malformed_json_gets_a_go_decoder_message(http: httpx.Client) -> None:
    assert error(http.post("/api/chat", content=b"xyz"), 400) == "invalid character 'x' looking for beginning of value"
    assert error(http.post("/api/chat", content=b'{"model": "qwen3"'), 400) == "unexpected EOF"


def test_wrong_json_types_get_go_unmarshal_messages(http: httpx.Client) -> None:
    message = error(http.post("/api/chat", json={"model": "qwen3", "messages": "hi"}), 400)
    assert message == ("json: cannot unmarshal string into Go struct field ChatRequest.messages "
                       "of type []api.Message")
    message = error(http.post("/api/chat", json=[1]), 400)
    assert message == "json: cannot unmarshal array into Go value of type api.ChatRequest"
    bad_arguments = [{"role": "assistant", "content": "",
                      "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]}]
    assert "arguments" in error(chat(http, messages=bad_arguments), 400)


def test_data_url_image_is_illegal_base64(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "look", "images": ["data:image/png;base64,iVBORw0KGgo="]}]
    assert error(chat(http, model="gemma4", messages=messages), 400) == "illegal base64 data at input byte 4"
    generate = http.post("/api/generate", json={"model": "gemma4", "prompt": "x", "images": ["ab"]})
    assert error(generate, 400) == "illegal base64 data at input byte 0"


def test_bare_base64_image_is_accepted_and_counted(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "look", "images": ["iVBORw0KGgo="]}]
    assert whole(chat(http, model="gemma4", stream=False, messages=messages))["prompt_eval_count"] == 1 + 4 + 64


@pytest.mark.parametrize(("options", "message"), [
    ({"stop": "\n"}, 'option "stop" must be of type array'),
    ({"stop": [1]}, 'option "stop" must be of an array of strings'),
    ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
    ({"num_predict": "5"}, 'option "num_predict" must be of type integer'),
    ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
])
def test_wrong_option_types_are_500(http: httpx.Client, options: dict[str, Any], message: str) -> None:
    assert error(chat(http, options=options), 500) == message


def test_unknown_options_are_ignored(http: httpx.Client) -> None:
    assert whole(chat(http, stream=False, options={"mirostat": "yes", "penalize_newline": 3}))["done"] is True


def test_top_logprobs_out_of_range(http: httpx.Client) -> None:
    assert error(chat(http, top_logprobs=21), 400) == "top_logprobs must be between 0 and 20"


@pytest.mark.parametrize(("keep_alive", "message"), [
    ("soon", 'time: invalid duration "soon"'),
    ("5", 'time: missing unit in duration "5"'),
    (True, "Unsupported type: 'bool'"),
])
def test_bad_keep_alive_is_400(http: httpx.Client, keep_alive: Any, message: str) -> None:
    assert error(chat(http, keep_alive=keep_alive), 400) == message


def test_invalid_format_is_500(http: httpx.Client) -> None:
    message = error(chat(http, format="xml"), 500)
    assert message == 'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'


# --- capabilities ----------------------------------------------------------------------------------------------

def test_thinking_model_thinks_by_default_thinking_first(http: httpx.Client) -> None:
    lines = ndjson(chat(http, model="qwen3"))
    kinds = ["thinking" if line["message"].get("thinking") else "content" for line in lines[:-1]]
    assert kinds == sorted(kinds, key=lambda kind: kind != "thinking") and kinds[0] == "thinking"
    assert "content" in kinds
    for line in lines[:-1]:
        if line["message"].get("thinking"):
            assert line["message"]["content"] == ""
    single = whole(chat(http, model="qwen3", stream=False))
    assert single["message"]["thinking"] == "".join(line["message"].get("thinking", "") for line in lines)
    assert single["eval_count"] == 12 + 12 // 4


def test_think_false_turns_thinking_off(http: httpx.Client) -> None:
    single = whole(chat(http, model="deepseek-r1", stream=False, think=False))
    assert "thinking" not in single["message"] and single["eval_count"] == 12


def test_think_levels_are_accepted_by_thinking_models(http: httpx.Client) -> None:
    assert whole(chat(http, model="qwen3", stream=False, think="high"))["message"]["thinking"]


def test_think_on_a_non_thinking_model(http: httpx.Client) -> None:
    assert error(chat(http, model="llama3.2", think=True), 400) == '"llama3.2" does not support thinking'
    assert whole(chat(http, model="llama3.2", think=False, stream=False))["done"] is True
    assert error(chat(http, think="extreme"), 400).startswith('invalid think value: "extreme"')
    assert error(chat(http, think=3), 400).startswith("think must be a boolean or string")


def test_tools_on_a_model_without_tools(http: httpx.Client) -> None:
    message = error(chat(http, model="deepseek-r1", tools=[WEATHER_TOOL]), 400)
    assert message == "registry.ollama.ai/library/deepseek-r1:latest does not support tools"


def test_chat_and_generate_on_the_embedding_model(http: httpx.Client) -> None:
    assert error(chat(http, model="nomic-embed-text"), 400) == '"nomic-embed-text" does not support chat'
    response = http.post("/api/generate", json={"model": "nomic-embed-text", "prompt": "x"})
    assert error(response, 400) == '"nomic-embed-text" does not support generate'


# --- tools -----------------------------------------------------------------------------------------------------

def test_weather_question_gets_a_whole_tool_call_in_one_chunk(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "What is the weather in Tokyo?"}]
    lines = ndjson(chat(http, model="qwen3", think=False, tools=[WEATHER_TOOL], messages=messages))
    calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(calls) == 1
    assert calls[0]["message"]["content"] == "" and calls[0]["done"] is False
    (call,) = calls[0]["message"]["tool_calls"]
    assert re.fullmatch(r"call_[a-z0-9]{8}", call["id"])
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "x"}}
    assert lines[-1]["done_reason"] == "stop"
    assert "".join(line["message"]["content"] for line in lines) == ""


def test_tool_call_not_streamed(http: httpx.Client) -> None:
    messages = [{"role": "user", "content": "weather please"}]
    single = whole(chat(http, model="llama3.2", stream=False, tools=[WEATHER_TOOL], messages=messages))
    assert single["message"]["content"] == ""
    assert single["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert single["done_reason"] == "stop" and single["eval_count"] > 0


def test_tool_result_gets_a_text_answer(http: httpx.Client) -> None:
    messages = [
        {"role": "user", "content": "weather in Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_abcd1234", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}}}]},
        {"role": "tool", "content": "22 degrees", "tool_name": "get_weather", "tool_call_id": "call_abcd1234"},
    ]
    single = whole(chat(http, model="llama3.2", stream=False, tools=[WEATHER_TOOL], messages=messages))
    assert "tool_calls" not in single["message"] and single["message"]["content"]


def test_tools_without_weather_answer_in_text(http: httpx.Client) -> None:
    single = whole(chat(http, model="llama3.2", stream=False, tools=[WEATHER_TOOL]))
    assert "tool_calls" not in single["message"] and single["message"]["content"]


# --- options ---------------------------------------------------------------------------------------------------

def test_num_predict_cuts_with_length(http: httpx.Client) -> None:
    lines = ndjson(chat(http, options={"num_predict": 3}))
    assert len(lines) == 4 and lines[-1]["done_reason"] == "length" and lines[-1]["eval_count"] == 3
    thinking = whole(chat(http, model="qwen3", stream=False, options={"num_predict": 2}))
    assert thinking["done_reason"] == "length" and thinking["message"]["content"] == ""


def test_stop_strings_cut_the_content(http: httpx.Client) -> None:
    full = whole(chat(http, stream=False))["message"]["content"]
    stop = full.split(" ")[4][:2]
    cut = whole(chat(http, stream=False, options={"stop": [stop]}))
    assert cut["done_reason"] == "stop"
    assert cut["message"]["content"] == full[: full.index(stop)]
    assert 0 < cut["eval_count"] < 12


def test_format_json_content_is_json(http: httpx.Client) -> None:
    content = whole(chat(http, stream=False, format="json"))["message"]["content"]
    assert isinstance(orjson.loads(content)["answer"], str)


def test_format_schema_fills_required_properties_by_type(http: httpx.Client) -> None:
    schema = {"type": "object", "required": ["name", "age", "ok", "tags", "kind", "where"],
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "ok": {"type": "boolean"},
                             "tags": {"type": "array", "items": {"type": "string"}},
                             "kind": {"enum": ["a", "b"]}, "where": {"type": "object", "properties": {
                                 "lat": {"type": "number"}}}, "optional": {"type": "string"}}}
    lines = ndjson(chat(http, model="qwen3", format=schema))
    content = "".join(line["message"]["content"] for line in lines)
    assert orjson.loads(content) == {"name": "x", "age": 1, "ok": True, "tags": ["x"], "kind": "a",
                                     "where": {"lat": 1}}
    assert any(line["message"].get("thinking") for line in lines)  # thinking stays free text


def test_truncate_false_with_a_prompt_over_num_ctx(http: httpx.Client) -> None:
    long = [{"role": "user", "content": "word " * 50}]
    assert error(chat(http, messages=long, truncate=False, options={"num_ctx": 20}), 400) == (
        "the input length exceeds the context length")
    assert whole(chat(http, stream=False, messages=long, options={"num_ctx": 20}))["prompt_eval_count"] == 20


def test_truncation_drops_oldest_non_system_messages(http: httpx.Client) -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "old " * 30},
                {"role": "assistant", "content": "a"}, {"role": "user", "content": "new question"}]
    body = whole(chat(http, stream=False, messages=messages, options={"num_ctx": 20}))
    assert body["prompt_eval_count"] == (1 + 4) + (1 + 4) + (2 + 4)


def test_shift_false_stops_at_the_context_with_length(http: httpx.Client) -> None:
    body = whole(chat(http, stream=False, shift=False, options={"num_ctx": 10}))
    assert body["prompt_eval_count"] == 9 and body["eval_count"] == 1 and body["done_reason"] == "length"


# --- load / unload ---------------------------------------------------------------------------------------------

def test_chat_without_messages_loads_and_with_keep_alive_zero_unloads(http: httpx.Client) -> None:
    loaded = whole(http.post("/api/chat", json={"model": "qwen3"}))
    assert loaded["done_reason"] == "load" and loaded["message"] == {"role": "assistant", "content": ""}
    assert not set(METRICS) & set(loaded)
    unloaded = whole(http.post("/api/chat", json={"model": "qwen3", "messages": [], "keep_alive": 0}))
    assert unloaded["done_reason"] == "unload"


def test_generate_without_prompt_loads_and_unloads(http: httpx.Client) -> None:
    loaded = whole(http.post("/api/generate", json={"model": "gemma4"}))
    assert loaded == {"model": "gemma4", "created_at": loaded["created_at"], "response": "", "done": True,
                      "done_reason": "load"}
    unloaded = whole(http.post("/api/generate", json={"model": "gemma4", "keep_alive": "0"}))
    assert unloaded["done_reason"] == "unload"


# --- generate --------------------------------------------------------------------------------------------------

def test_generate_streams_response_pieces_and_context_on_the_last_line(http: httpx.Client) -> None:
    lines = ndjson(http.post("/api/generate", json={"model": "llama3.2", "prompt": "Tell me"}))
    assert all(isinstance(line["response"], str) for line in lines)
    assert all("context" not in line for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["response"] == ""
    assert len(final["context"]) == final["prompt_eval_count"] + final["eval_count"]


def test_generate_not_streamed_matches_stream(http: httpx.Client) -> None:
    payload = {"model": "llama3.2", "prompt": "Tell me"}
    lines = ndjson(http.post("/api/generate", json=payload))
    single = whole(http.post("/api/generate", json=payload | {"stream": False}))
    assert single["response"] == "".join(line["response"] for line in lines)
    assert single["context"] == lines[-1]["context"]


def test_generate_raw_has_no_context_and_no_template_overhead(http: httpx.Client) -> None:
    single = whole(http.post("/api/generate", json={"model": "llama3.2", "prompt": "a b c", "raw": True,
                                                     "stream": False}))
    assert "context" not in single and single["prompt_eval_count"] == 3


def test_generate_system_adds_a_message(http: httpx.Client) -> None:
    single = whole(http.post("/api/generate", json={"model": "llama3.2", "prompt": "a b c", "system": "be kind",
                                                     "stream": False}))
    assert single["prompt_eval_count"] == (3 + 4) + (2 + 4)


def test_generate_raw_refuses_template_system_and_context(http: httpx.Client) -> None:
    for extra in ({"system": "s"}, {"template": "{{ .Prompt }}"}, {"context": [1, 2]}):
        response = http.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "raw": True} | extra)
        assert error(response, 400) == "raw mode does not support template, system, or context"


def test_generate_suffix_needs_insert(http: httpx.Client) -> None:
    response = http.post("/api/generate", json={"model": "qwen3-coder", "prompt": "def f(", "suffix": "return"})
    assert error(response, 400) == "registry.ollama.ai/library/qwen3-coder:latest does not support insert"


def test_generate_thinking_is_top_level(http: httpx.Client) -> None:
    single = whole(http.post("/api/generate", json={"model": "qwen3", "prompt": "why?", "stream": False}))
    assert single["thinking"] and single["response"]


# --- info endpoints --------------------------------------------------------------------------------------------

def test_tags_lists_the_catalogue_newest_first(http: httpx.Client) -> None:
    models = http.get("/api/tags").json()["models"]
    names = [model["name"] for model in models]
    assert set(names) == {"gemma4:latest", "qwen3:latest", "qwen3.6:latest", "qwen3-coder:latest",
                          "deepseek-r1:latest", "llama3.2:latest", "nomic-embed-text:latest"}
    stamps = [model["modified_at"] for model in models]
    assert stamps == sorted(stamps, reverse=True)
    for model in models:
        assert model["model"] == model["name"]
        assert re.fullmatch(r"[0-9a-f]{64}", model["digest"])
        assert model["size"] > 0 and model["details"]["format"] == "gguf"
    by_name = {model["name"]: model for model in models}
    assert by_name["gemma4:latest"]["capabilities"] == ["completion", "vision", "tools", "thinking"]
    assert by_name["nomic-embed-text:latest"]["capabilities"] == ["embedding"]
    assert http.head("/api/tags").status_code == 200


def test_show_reports_capabilities_and_model_info(http: httpx.Client) -> None:
    shown = whole(http.post("/api/show", json={"model": "QWEN3"}))
    assert shown["capabilities"] == ["completion", "tools", "thinking"]
    assert shown["model_info"]["general.architecture"] == "qwen3"
    assert shown["model_info"]["qwen3.context_length"] == 40960
    assert shown["details"]["family"] == "qwen3" and shown["template"] and shown["modified_at"]
    assert "stop" in shown["parameters"]
    embed = whole(http.post("/api/show", json={"name": "nomic-embed-text"}))
    assert embed["model_info"]["nomic-bert.embedding_length"] == 768
    assert embed["model_info"]["nomic-bert.context_length"] == 2048


def test_show_errors(http: httpx.Client) -> None:
    assert error(http.post("/api/show", json={}), 400) == "model is required"
    assert error(http.post("/api/show", json={"model": "foo"}), 404) == "model 'foo:latest' not found"


def test_ps_tracks_models_used_and_unloads() -> None:
    with serve_app(create_fake_app()) as url, httpx.Client(base_url=url) as http:
        assert http.get("/api/ps").json() == {"models": []}
        chat(http, stream=False, options={"num_ctx": 8192})
        chat(http, model="qwen3-slow", stream=False, keep_alive="1h", options={"num_predict": 1})
        models = http.get("/api/ps").json()["models"]
        assert [model["name"] for model in models] == ["qwen3-slow:latest", "llama3.2:latest"]
        llama = models[1]
        assert llama["context_length"] == 8192 and llama["size_vram"] == llama["size"] > 0
        assert re.match(r"^\d{4}-\d\d-\d\dT", llama["expires_at"])
        chat(http, messages=[], keep_alive=0)
        assert [model["name"] for model in http.get("/api/ps").json()["models"]] == ["qwen3-slow:latest"]
