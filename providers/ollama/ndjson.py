"""Incremental NDJSON decoder: bytes in, complete JSON objects out, no awaits.

Input may be split at any byte: a line is parsed only once its `\\n` has arrived, so a
multi-byte UTF-8 character or a JSON token cut in two by the network is never seen half.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.errors import UpstreamProtocolError

# A single line bigger than this is a broken or hostile upstream, not a chunk to keep buffering.
MAX_LINE_BYTES = 32 * 1024 * 1024


class NDJSONDecoder:
    """Split a byte stream into newline-terminated JSON objects."""

    __slots__ = ("_parts", "_pending", "_max_line")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._parts: list[bytes] = []  # pieces of an unfinished line, joined once its newline arrives
        self._pending = 0
        self._max_line = max_line

    def decode(self, data: bytes) -> list[dict[str, Any]]:
        """Feed bytes; return every object whose line is now complete."""
        if b"\n" not in data:
            if data:
                self._keep(data)
            return []
        if self._parts:
            self._parts.append(data)
            data = b"".join(self._parts)
            self._parts.clear()
            self._pending = 0
        elif data.endswith(b"\n") and data.count(b"\n") == 1:
            # Ollama flushes one whole line per chunk: parse it without splitting or copying.
            return [_parse(data)]
        lines = data.split(b"\n")
        tail = lines.pop()
        if tail:
            self._keep(tail)
        return [_parse(line) for line in lines if line.strip()]

    def flush(self) -> list[dict[str, Any]]:
        """End of input: parse a last line that lacked its newline, if any."""
        tail = b"".join(self._parts)
        self._parts.clear()
        self._pending = 0
        return [_parse(tail)] if tail.strip() else []

    def _keep(self, piece: bytes) -> None:
        self._pending += len(piece)
        if self._pending > self._max_line:
            self._parts.clear()
            self._pending = 0
            raise UpstreamProtocolError(f"NDJSON line longer than {self._max_line} bytes")
        self._parts.append(piece)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(f"invalid JSON line from upstream: {_preview(line)}") from exc
    if type(value) is not dict:
        raise UpstreamProtocolError(f"NDJSON line is not an object: {_preview(line)}")
    return value


def _preview(line: bytes, limit: int = 200) -> str:
    text = line[:limit].decode("utf-8", "replace").strip()
    return text + ("..." if len(line) > limit else "")
