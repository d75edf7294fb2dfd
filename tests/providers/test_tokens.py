"""Token estimates: conservative for holds, central for the context check."""

from __future__ import annotations

from typing import Any

from providers.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    PromptSize,
    estimate_output_tokens,
    estimate_tokens,
    measure_messages,
    measure_texts,
)


def test_estimate_tokens_counts_utf8_bytes_over_three_plus_one() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abc") == 2
    assert estimate_tokens("abcd") == 3
    assert estimate_tokens("日本") == 3  # 6 bytes


def test_estimate_is_above_real_counts_for_english() -> None:
    # "The quick brown fox jumps over the lazy dog." is 10 tokens in cl100k/llama tokenizers.
    assert estimate_tokens("The quick brown fox jumps over the lazy dog.") >= 10


def test_output_tokens_use_pieces_or_bytes_whichever_is_more() -> None:
    assert estimate_output_tokens(0, 0) == 0
    assert estimate_output_tokens(12, 5) == 5
    assert estimate_output_tokens(40, 2) == 10


def test_prompt_size_estimate_is_above_typical() -> None:
    size = PromptSize(text_bytes=1200, images=1, messages=2)
    fixed = 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD + IMAGE_TOKENS
    assert size.typical() == 300 + fixed
    assert size.estimate() == 400 + fixed + 1


def test_measure_messages_counts_text_thinking_tool_calls_images_and_tools() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "abc", "images": ["x", "y"]},
                {"role": "assistant", "content": "", "thinking": "hm",
                 "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
                {"role": "tool", "content": "ok", "tool_name": "f"}]
    size = measure_messages(messages, tools=[{"type": "function"}])
    tool_call_bytes = len(b'[{"function":{"name":"f","arguments":{}}}]')
    assert size == PromptSize(3 + 2 + tool_call_bytes + 2 + 1 + len(b'[{"type":"function"}]'), images=2, messages=3)


def test_measure_texts() -> None:
    assert measure_texts(["ab", "é"]) == PromptSize(4)
