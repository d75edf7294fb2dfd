"""DeepSeek's inline `<think>...</think>` reasoning, split out wherever the chunk boundaries fall."""

from __future__ import annotations

import pytest

from providers.openai.think_tags import ThinkTagSplitter, split_think_tags

CASES = [
    ("<think>\nPonder.\n</think>\n\nAnswer.", ("\nPonder.\n", "Answer.")),
    ("  <think>a</think>b", ("a", "b")),
    ("<think></think>Only answer", ("", "Only answer")),
    ("No tags at all", ("", "No tags at all")),
    ("Text with <think>inside</think> later", ("", "Text with <think>inside</think> later")),
    ("<think>never closed", ("never closed", "")),
    ("<think>a < b </thin and </think>done", ("a < b </thin and ", "done")),
    ("<thi", ("", "<thi")),
    ("<thinking>x", ("", "<thinking>x")),
    ("", ("", "")),
    ("   ", ("", "   ")),
    ("<think>x</think>\n\n", ("x", "")),
    ("<think>日本語</think>答え", ("日本語", "答え")),
]


@pytest.mark.parametrize("text,expected", CASES)
def test_whole_text(text: str, expected: tuple[str, str]) -> None:
    assert split_think_tags(text) == expected


@pytest.mark.parametrize("text,expected", CASES)
def test_same_result_for_every_split_into_two_and_three_pieces(text: str, expected: tuple[str, str]) -> None:
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            splitter = ThinkTagSplitter()
            reasoning = answer = ""
            for piece in (text[:i], text[i:j], text[j:]):
                r, a = splitter.feed(piece)
                reasoning, answer = reasoning + r, answer + a
            r, a = splitter.flush()
            assert (reasoning + r, answer + a) == expected, (i, j)


def test_one_character_at_a_time() -> None:
    text = "<think>step one\nstep two</think>\n\nThe answer is 4."
    splitter = ThinkTagSplitter()
    pieces = [splitter.feed(ch) for ch in text] + [splitter.flush()]
    assert ("".join(p[0] for p in pieces), "".join(p[1] for p in pieces)) == ("step one\nstep two",
                                                                             "The answer is 4.")


def test_text_is_released_as_soon_as_it_cannot_be_a_tag() -> None:
    splitter = ThinkTagSplitter()
    assert splitter.feed("<think>abc</") == ("abc", "")
    assert splitter.feed("b") == ("</b", "")
    assert splitter.feed("</think>Hi") == ("", "Hi")
    assert splitter.feed(" there") == ("", " there")
