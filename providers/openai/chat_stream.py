"""/api/chat NDJSON chunks -> OpenAI `chat.completion.chunk` SSE frames.

Sequence: a role chunk (`{"role":"assistant","content":""}`), then per Ollama chunk a
`reasoning_content` delta (also as `reasoning`) and/or a `content` delta and/or a `tool_calls` delta (each call whole),
then a finish chunk (`delta: {}`), a usage chunk when `stream_options.include_usage` was set, and
`data: [DONE]`. Every chunk carries the same id and created time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.base import ModelTarget, PreparedRequest
from providers.families import get_family
from providers.openai.chat import usage_json
from providers.openai.forced_call import ForcedCall
from providers.openai.logprobs import content_logprobs
from providers.openai.output import OutputReader, finish_reason
from providers.openai.stream_base import DataStreamEncoder
from providers.sse import DONE, SLOT, FrameTemplate, data_frame

_ROLE_DELTA = b'{"role":"assistant","content":""}'


class ChatStreamEncoder(DataStreamEncoder):
    """One streaming chat answer; see the module docstring for the frame sequence."""

    __slots__ = ("_head", "_delta", "_content", "_reasoning", "_calls", "_forced", "_held", "_single", "_logprobs")

    def __init__(self, prepared: PreparedRequest, target: ModelTarget, response_id: str, created: int) -> None:
        super().__init__(prepared, OutputReader(get_family(target.family).think_tags))
        self._head = {"id": response_id, "object": "chat.completion.chunk", "created": created,
                      "model": target.public_name}
        # With include_usage, OpenAI sends `"usage": null` on every chunk but the last; strict clients rely on it.
        tail = {"usage": None} if prepared.include_usage else {}
        self._delta = FrameTemplate({**self._head, "choices": [{"index": 0, "delta": SLOT, "finish_reason": None}],
                                     **tail})
        self._content = FrameTemplate({**self._head, "choices": [
            {"index": 0, "delta": {"content": SLOT}, "finish_reason": None}], **tail})
        self._reasoning = FrameTemplate({**self._head, "choices": [
            {"index": 0, "delta": {"reasoning_content": SLOT, "reasoning": SLOT}, "finish_reason": None}], **tail})
        self._calls = 0
        # A forced call arrives as JSON text: it is held back and sent as one tool call at the end.
        self._forced: ForcedCall | None = prepared.meta.get("forced_call")
        self._held: list[str] = []
        self._single = bool(prepared.meta.get("single_call"))
        self._logprobs = bool(prepared.meta.get("logprobs"))

    def _frames(self, thinking: str, content: str) -> list[bytes]:
        frames = []
        if self._prepared.meta.get("hide_reasoning"):
            thinking = ""  # reasoning.exclude: generated and paid for, not shown
        if self._forced is not None and content:
            self._held.append(content)
            content = ""
        if thinking:
            text = orjson.dumps(thinking)
            frames.append(self._reasoning.render(text, text))
        if content:
            frames.append(self._content.render(orjson.dumps(content)))
        return frames

    def feed(self, chunk: Mapping[str, Any]) -> bytes:
        """One Ollama chunk -> SSE frames."""
        if self._closed:
            return b""
        frames: list[bytes] = []
        if not self._started:
            self._started = True
            frames.append(self._delta.render(_ROLE_DELTA))
        message = chunk.get("message")
        if isinstance(message, Mapping):
            thinking, content = self._reader.read(message)
            if self._logprobs and chunk.get("logprobs") and content and self._forced is None:
                # Rare path (logprobs asked): the content frame carries the chunk's logprobs too.
                frames += self._frames(thinking, "")
                frames.append(self._logprob_frame(content, chunk["logprobs"]))
            else:
                frames += self._frames(thinking, content)
            if message.get("tool_calls"):
                frames += self._call_frames(self._reader.tool_calls(message["tool_calls"]))
        if chunk.get("done"):
            self._final = chunk
            frames += self._frames(*self._reader.flush())
            frames += self._release_held()
        return b"".join(frames)

    def _logprob_frame(self, content: str, entries: Any) -> bytes:
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": None,
                  "logprobs": {"content": content_logprobs(entries), "refusal": None}}
        return data_frame({**self._head, "choices": [choice],
                           **({"usage": None} if self._prepared.include_usage else {})})

    def _call_frames(self, calls: list[dict[str, Any]]) -> list[bytes]:
        if self._single:
            calls = calls[: max(0, 1 - self._calls)]  # parallel_tool_calls: false -> the first call only
        for call in calls:
            call["index"] = self._calls
            self._calls += 1
        return [self._delta.render(orjson.dumps({"tool_calls": calls}))] if calls else []

    def _release_held(self) -> list[bytes]:
        """The forced call from the held JSON text (or the text itself, cut off, when no call can be read)."""
        if self._forced is None or not self._held:
            return []
        text, self._held = "".join(self._held), []
        if self._calls:  # the model made a native call after all; its text is not the call
            return []
        truncated = self._final is not None and self._final.get("done_reason") == "length"
        calls = self._forced.calls(text, truncated=truncated)
        if calls:
            return self._call_frames(calls)
        return [self._content.render(orjson.dumps(text))]

    def finish(self) -> bytes:
        """The finish chunk, the usage chunk when asked for, and [DONE]."""
        if self._closed:
            return b""
        frames = [] if self._started else [self._delta.render(_ROLE_DELTA)]
        if self._final is None:
            frames += self._frames(*self._reader.flush())
            frames += self._release_held()
        self._started = self._closed = True
        done_reason = self._final.get("done_reason") if self._final is not None else None
        frames.append(data_frame({**self._head, "choices": [
            {"index": 0, "delta": {}, "finish_reason": finish_reason(done_reason, self._calls > 0)}],
            **({"usage": None} if self._prepared.include_usage else {})}))
        if self._prepared.include_usage:
            usage = self.usage()
            frames.append(data_frame({**self._head, "choices": [],
                                      "usage": usage_json(usage, self._reader, self._final)}))
        frames.append(DONE)
        return b"".join(frames)

