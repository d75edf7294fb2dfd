"""/api/chat answers -> chat.completion objects and chat.completion.chunk SSE streams."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from providers.base import ModelTarget, PreparedRequest, prepare, render_response, stream_encoder
from providers.errors import UpstreamProtocolError
from tests.providers.translate_helpers import chat_request, ollama_call, ollama_chat, sse_events, sse_json, target

RID = "chatcmpl-test"


def prepared(tgt: ModelTarget | None = None, **kw: Any) -> PreparedRequest:
    return prepare("chat.completions", chat_request(**kw), tgt or target())


def render(ollama: dict[str, Any], tgt: ModelTarget | None = None, **kw: Any) -> dict[str, Any]:
    tgt = tgt or target()
    answer, _ = render_response(prepared(tgt, **kw), tgt, ollama, response_id=RID, created=1700000000)
    return answer


def stream(chunks: list[dict[str, Any]], tgt: ModelTarget | None = None, **kw: Any) -> bytes:
    tgt = tgt or target()
    enc = stream_encoder(prepared(tgt, stream=True, **kw), tgt, response_id=RID, created=1700000000)
    return b"".join(enc.feed(c) for c in chunks) + enc.finish()


def deltas(raw: bytes) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in sse_json(raw) if c["choices"]]


# --- non-streaming -----------------------------------------------------------------------------

def test_answer_envelope_uses_the_public_name_and_given_id() -> None:
    answer = render(ollama_chat("Hi there"), target(public_name="privaterouter/qwen-fast", tag="qwen3:latest"))
    assert answer["id"] == RID and answer["object"] == "chat.completion" and answer["created"] == 1700000000
    assert answer["model"] == "privaterouter/qwen-fast"
    assert "qwen3" not in orjson.dumps(answer).decode()


def test_content_and_usage() -> None:
    answer = render(ollama_chat("Hi there", prompt_eval_count=12, eval_count=3))
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hi there"},
                                  "logprobs": None, "finish_reason": "stop"}]
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_usage_is_returned_to_the_gateway_too() -> None:
    tgt = target()
    _, usage = render_response(prepared(tgt), tgt, ollama_chat("x", prompt_eval_count=5, eval_count=2),
                               response_id=RID, created=0)
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (5, 2, False)


def test_tool_calls_get_string_arguments_null_content_and_finish_reason_tool_calls() -> None:
    answer = render(ollama_chat("", tool_calls=[ollama_call("get_weather", {"city": "Tokyo", "days": 2})]))
    message = answer["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [{"id": "call_ab12cd34", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city":"Tokyo","days":2}'}}]
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Tokyo", "days": 2}
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_calls_without_ids_get_unique_ones() -> None:
    calls = [ollama_call("a", {}, 0, call_id=None), ollama_call("b", {}, 1, call_id=None)]
    ids = [c["id"] for c in render(ollama_chat("", tool_calls=calls))["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_text_before_a_tool_call_is_kept() -> None:
    message = render(ollama_chat("Let me check.", tool_calls=[ollama_call("f", {})]))["choices"][0]["message"]
    assert message["content"] == "Let me check." and len(message["tool_calls"]) == 1


def test_thinking_becomes_reasoning_content_with_reasoning_tokens() -> None:
    answer = render(ollama_chat("3", thinking="Count the r's: s-t-r-a-w-b-e-r-r-y", eval_count=40))
    assert answer["choices"][0]["message"]["reasoning_content"] == "Count the r's: s-t-r-a-w-b-e-r-r-y"
    assert 0 < answer["usage"]["completion_tokens_details"]["reasoning_tokens"] <= 40


def test_no_reasoning_details_without_thinking() -> None:
    answer = render(ollama_chat("3"))
    assert "reasoning_content" not in answer["choices"][0]["message"]
    assert "completion_tokens_details" not in answer["usage"]


@pytest.mark.parametrize("done_reason,finish", [("stop", "stop"), ("length", "length"), ("load", "stop"),
                                                ("unload", "stop"), (None, "stop"), ("", "stop")])
def test_finish_reason(done_reason: str | None, finish: str) -> None:
    assert render(ollama_chat("x", done_reason=done_reason))["choices"][0]["finish_reason"] == finish


def test_length_wins_over_tool_calls() -> None:
    answer = render(ollama_chat("", tool_calls=[ollama_call("f", {})], done_reason="length"))
    assert answer["choices"][0]["finish_reason"] == "length"


def test_missing_counts_are_estimated_and_flagged() -> None:
    tgt = target()
    prep = prepared(tgt)
    answer, usage = render_response(prep, tgt, ollama_chat("a fairly short reply", prompt_eval_count=None,
                                                           eval_count=None), response_id=RID, created=0)
    assert usage.estimated and usage.input_tokens == prep.prompt_tokens_estimate and usage.output_tokens > 0
    assert answer["usage"]["prompt_tokens"] == usage.input_tokens


def test_zero_output_omits_eval_count_and_is_not_an_estimate() -> None:
    # Ollama omits zero-valued metrics: no eval_count with no output is an exact 0.
    tgt = target()
    _, usage = render_response(prepared(tgt), tgt, ollama_chat("", eval_count=None), response_id=RID, created=0)
    assert (usage.output_tokens, usage.estimated) == (0, False)


def test_cached_prompt_tokens_are_reported() -> None:
    answer = render(ollama_chat("x", prompt_eval_cached_count=8))
    assert answer["usage"]["prompt_tokens_details"] == {"cached_tokens": 8}


@pytest.mark.parametrize("ollama", [{"done": True}, {"message": "text", "done": True},
                                    {"message": {"content": 5}, "done": True},
                                    {"message": {"content": "", "tool_calls": [{"function": {}}]}, "done": True}])
def test_malformed_answer_is_a_protocol_error(ollama: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        render(ollama)


def test_deepseek_inline_think_tags_are_split_out() -> None:
    answer = render(ollama_chat("<think>\nThe user greets.\n</think>\n\nHello!"), target("deepseek"))
    message = answer["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == ("\nThe user greets.\n", "Hello!")


def test_other_families_leave_think_tags_alone() -> None:
    answer = render(ollama_chat("<think>x</think>y"), target("qwen"))
    assert answer["choices"][0]["message"]["content"] == "<think>x</think>y"


# --- streaming ---------------------------------------------------------------------------------

def test_stream_sequence_role_content_finish_done() -> None:
    raw = stream([ollama_chat("Hel", done=False), ollama_chat("lo", done=False), ollama_chat("")])
    assert deltas(raw) == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    chunks = sse_json(raw)
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert raw.endswith(b"data: [DONE]\n\n")


def test_every_chunk_shares_id_created_model_and_object() -> None:
    chunks = sse_json(stream([ollama_chat("a", done=False), ollama_chat("b")], stream_options={"include_usage": True}))
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (RID, 1700000000, "privaterouter/qwen-test", "chat.completion.chunk")}


def test_frames_are_plain_data_frames() -> None:
    events = sse_events(stream([ollama_chat("a")]))
    assert all(event is None for event, _ in events) and events[-1][1] == "[DONE]"


def test_usage_chunk_only_when_asked() -> None:
    without = sse_json(stream([ollama_chat("a", prompt_eval_count=4, eval_count=1)]))
    assert all("usage" not in c for c in without)
    with_usage = sse_json(stream([ollama_chat("a", prompt_eval_count=4, eval_count=1)],
                                 stream_options={"include_usage": True}))
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"] == {
        "prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}
    assert with_usage[-2]["choices"][0]["finish_reason"] == "stop"


def test_thinking_comes_as_reasoning_content_before_content_of_the_same_chunk() -> None:
    raw = stream([ollama_chat("", thinking="Let me", done=False), ollama_chat("A", thinking=" see.", done=False),
                  ollama_chat("")])
    assert deltas(raw)[1:] == [{"reasoning_content": "Let me", "reasoning": "Let me"},
                               {"reasoning_content": " see.", "reasoning": " see."}, {"content": "A"}, {}]


def test_trailing_content_on_the_done_chunk_is_relayed() -> None:
    raw = stream([ollama_chat("Hi", done=False), ollama_chat(" there", done_reason="length")])
    assert deltas(raw)[1:] == [{"content": "Hi"}, {"content": " there"}, {}]
    assert sse_json(raw)[-1]["choices"][0]["finish_reason"] == "length"


def test_tool_calls_arrive_whole_with_increasing_index_and_finish_tool_calls() -> None:
    raw = stream([ollama_chat("", tool_calls=[ollama_call("a", {"x": 1}, 0, "call_a")], done=False),
                  ollama_chat("", tool_calls=[ollama_call("b", {}, 0, None)], done=False),
                  ollama_chat("")])
    calls = [d["tool_calls"][0] for d in deltas(raw) if "tool_calls" in d]
    assert calls[0] == {"id": "call_a", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'},
                        "index": 0}
    assert calls[1]["index"] == 1 and calls[1]["id"].startswith("call_") and calls[1]["function"]["name"] == "b"
    assert sse_json(raw)[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_two_tool_calls_in_one_chunk_share_a_delta() -> None:
    raw = stream([ollama_chat("", tool_calls=[ollama_call("a", {}, 0, "c1"), ollama_call("b", {}, 1, "c2")])])
    calls = [d["tool_calls"] for d in deltas(raw) if "tool_calls" in d]
    assert [[c["index"] for c in group] for group in calls] == [[0, 1]]


def test_empty_chunks_produce_nothing_after_the_role_chunk() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    assert enc.feed(ollama_chat("", done=False))  # the role chunk
    assert enc.feed(ollama_chat("", done=False)) == b""


def test_started_turns_true_with_the_first_bytes() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    assert not enc.started
    enc.feed(ollama_chat("a", done=False))
    assert enc.started


def test_finish_without_any_chunk_still_yields_a_valid_stream() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    raw = enc.finish()
    assert deltas(raw) == [{"role": "assistant", "content": ""}, {}] and raw.endswith(b"data: [DONE]\n\n")


def test_fail_sends_an_openai_error_and_ends_the_stream() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    enc.feed(ollama_chat("partial", done=False))
    raw = enc.fail("upstream_error", "model runner has unexpectedly stopped")
    assert sse_json(raw) == [{"error": {"message": "model runner has unexpectedly stopped", "type": "upstream_error",
                                        "code": "upstream_error", "param": None}}]
    assert b"[DONE]" not in raw
    assert enc.feed(ollama_chat("more")) == b"" and enc.finish() == b"" and enc.fail("x", "y") == b""


def test_fail_error_type_can_be_given() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    raw = enc.fail("insufficient_credits", "out of credit", error_type="insufficient_quota")
    assert sse_json(raw)[0]["error"]["type"] == "insufficient_quota"


def test_usage_uses_ollama_counts_once_done() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    enc.feed(ollama_chat("a", done=False))
    enc.feed(ollama_chat("", prompt_eval_count=30, eval_count=9))
    usage = enc.usage()
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (30, 9, False)


def test_usage_before_done_counts_what_was_relayed() -> None:
    tgt = target()
    prep = prepared(tgt, stream=True)
    enc = stream_encoder(prep, tgt, response_id=RID, created=0)
    assert enc.usage().output_tokens == 0 and enc.usage().estimated
    for piece in ["One", " two", " three", " four"]:
        enc.feed(ollama_chat(piece, done=False))
    enc.feed(ollama_chat("", thinking="hm", done=False))
    usage = enc.usage()
    assert usage.estimated and usage.input_tokens == prep.prompt_tokens_estimate and usage.output_tokens == 5


def test_usage_with_done_but_no_counts_is_estimated() -> None:
    tgt = target()
    enc = stream_encoder(prepared(tgt, stream=True), tgt, response_id=RID, created=0)
    enc.feed(ollama_chat("abc", done=False))
    enc.feed(ollama_chat("", prompt_eval_count=None, eval_count=None))
    usage = enc.usage()
    assert usage.estimated and usage.output_tokens == 1


def test_deepseek_think_tags_split_across_chunks() -> None:
    pieces = ["<thi", "nk>", "Rea", "soning</th", "ink>", "\n\n", "Ans", "wer"]
    raw = stream([ollama_chat(p, done=False) for p in pieces] + [ollama_chat("")], target("deepseek"))
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas(raw))
    content = "".join(d.get("content", "") for d in deltas(raw))
    assert (reasoning, content) == ("Reasoning", "Answer")


def test_deepseek_unclosed_think_is_flushed_as_reasoning_at_the_end() -> None:
    raw = stream([ollama_chat("<think>cut off</th", done=False), ollama_chat("", done_reason="length")],
                 target("deepseek"))
    assert "".join(d.get("reasoning_content", "") for d in deltas(raw)) == "cut off</th"
