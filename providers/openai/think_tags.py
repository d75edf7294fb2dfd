"""Splits `<think>...</think>` reasoning out of generated text, incrementally.

Servers without native thinking support (or models run without it) leave DeepSeek-R1 style
reasoning inline: the reply *starts* with `<think>`, reasons, closes with `</think>`, then
answers. The splitter is correct wherever chunk boundaries fall, including inside a tag: text that
might still be the start of a tag is held back until the next piece decides it.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"

_START, _THINK, _ANSWER_START, _ANSWER = range(4)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkTagSplitter:
    """feed(text) -> (reasoning, answer) pieces; flush() at the end returns what was held back."""

    __slots__ = ("_state", "_held")

    def __init__(self) -> None:
        self._state = _START
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Split the next piece of generated text."""
        if self._state == _ANSWER:
            return "", text
        text = self._held + text
        self._held = ""
        if self._state == _START:
            stripped = text.lstrip()
            if stripped.startswith(OPEN):
                self._state = _THINK
                text = stripped[len(OPEN):]
            elif not stripped or OPEN.startswith(stripped):
                self._held = text  # only whitespace or a partial "<think>" so far
                return "", ""
            else:
                self._state = _ANSWER
                return "", text
        if self._state == _THINK:
            end = text.find(CLOSE)
            if end < 0:
                keep = _partial_suffix(text, CLOSE)
                if keep:
                    self._held = text[-keep:]
                    return text[:-keep], ""
                return text, ""
            reasoning, text = text[:end], text[end + len(CLOSE):]
            self._state = _ANSWER_START
            return reasoning, self._answer_start(text)
        return "", self._answer_start(text)

    def _answer_start(self, text: str) -> str:
        # The template puts blank lines after </think>; they are not part of the answer.
        stripped = text.lstrip()
        if stripped:
            self._state = _ANSWER
        return stripped

    def flush(self) -> tuple[str, str]:
        """End of the text: whatever was held back, as reasoning if inside an unclosed block."""
        held, self._held = self._held, ""
        if self._state == _THINK:
            return held, ""
        if self._state == _START:
            return "", held
        return "", ""


def split_think_tags(text: str) -> tuple[str, str]:
    """Whole-text version: (reasoning, answer)."""
    splitter = ThinkTagSplitter()
    reasoning, answer = splitter.feed(text)
    tail_reasoning, tail_answer = splitter.flush()
    return reasoning + tail_reasoning, answer + tail_answer
