"""Streamed Ollama lines assembled into the non-streaming answer."""

from __future__ import annotations

import pytest

from providers.errors import UpstreamProtocolError
from providers.ollama.assemble import StreamAssembler

DONE = {"model": "m", "done": True, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 4}


def test_chat_lines_merge_content_thinking_and_tool_calls() -> None:
    assembler = StreamAssembler()
    call = {"function": {"name": "get_time", "arguments": {}}}
    for chunk in [{"message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
                  {"message": {"role": "assistant", "content": "Héllo"}, "done": False},
                  {"message": {"role": "assistant", "content": " you", "tool_calls": [call]}, "done": False},
                  {**DONE, "message": {"role": "assistant", "content": ""}}]:
        assembler.feed(chunk)
    answer = assembler.merged()
    assert answer["message"] == {"role": "assistant", "content": "Héllo you", "thinking": "hm", "tool_calls": [call]}
    assert (answer["prompt_eval_count"], answer["eval_count"], answer["done_reason"]) == (7, 4, "stop")
    assert assembler.pieces == 3 and assembler.output_tokens_estimate() == 3


def test_generate_lines_merge_the_response() -> None:
    assembler = StreamAssembler()
    for chunk in [{"response": "a", "done": False}, {"response": "b", "done": False}, {**DONE, "response": ""}]:
        assembler.feed(chunk)
    assert assembler.merged()["response"] == "ab" and "message" not in assembler.merged()


def test_a_stream_without_its_final_line_is_a_protocol_error_but_still_counts() -> None:
    assembler = StreamAssembler()
    assembler.feed({"message": {"role": "assistant", "content": "x" * 40}, "done": False})
    assert not assembler.done and assembler.output_tokens_estimate() == 10  # 40 bytes / 4 > one line
    with pytest.raises(UpstreamProtocolError):
        assembler.merged()


def test_each_lines_logprobs_are_kept_in_order() -> None:
    assembler = StreamAssembler()
    for text, logprob in (("Can", -0.1), ("berra", -0.2)):
        assembler.feed({"message": {"role": "assistant", "content": text},
                        "logprobs": [{"token": text, "logprob": logprob}], "done": False})
    assembler.feed({"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop"})
    merged = assembler.merged()
    assert merged["message"]["content"] == "Canberra"
    assert merged["logprobs"] == [{"token": "Can", "logprob": -0.1}, {"token": "berra", "logprob": -0.2}]
