"""What the chat and legacy-completion stream encoders share: `data:` error frames, usage, state."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import PreparedRequest, Usage
from providers.openai.output import OutputReader
from providers.sse import data_frame, error_payload, error_type_for


class DataStreamEncoder:
    """Base of the encoders whose frames are plain `data:` lines ending in `data: [DONE]`."""

    __slots__ = ("_prepared", "_reader", "_final", "_started", "_closed")

    def __init__(self, prepared: PreparedRequest, reader: OutputReader) -> None:
        self._prepared = prepared
        self._reader = reader
        self._final: Mapping[str, Any] | None = None
        self._started = False
        self._closed = False

    @property
    def started(self) -> bool:
        return self._started

    def fail(self, code: str, message: str, *, error_type: str | None = None) -> bytes:
        """An OpenAI error frame; the stream ends there (no [DONE]: the answer did not complete)."""
        if self._closed:
            return b""
        self._started = self._closed = True
        return data_frame(error_payload(code, message, error_type or error_type_for(code)))

    def usage(self) -> Usage:
        """Ollama's counts if the done chunk came, else an estimate of what was relayed."""
        return self._reader.usage(self._final, self._prepared.prompt_tokens_estimate)
