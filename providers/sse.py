"""Server-sent-event framing for OpenAI streams, built for the hot path.

Most frames of a stream differ from each other only in one or two values (the text delta, a
sequence number). `FrameTemplate` serializes everything else once per stream, so a frame costs one
`orjson.dumps` of the changing value and a bytes join.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

DONE = b"data: [DONE]\n\n"

# A string no JSON value of ours contains; orjson escapes the control characters, so it cannot
# collide with text that happens to spell "slot".
SLOT = "\x00\x01slot\x01\x00"
_SLOT_JSON = orjson.dumps(SLOT)


# Characters JSON may carry raw but that line readers built on str.splitlines() (httpx `iter_lines`,
# requests' `iter_lines(decode_unicode=True)`) treat as line ends: NEL, LINE SEPARATOR, PARAGRAPH
# SEPARATOR. orjson already escapes every control character below U+0020 (so \r, \v, \f, \x1c-\x1e).
# In valid UTF-8 these byte sequences can only be those characters.
_LINE_BREAKERS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def line_safe(data: bytes) -> bytes:
    """Serialized JSON with every character a line-splitting reader would break on escaped (\\uXXXX)."""
    if b"\xc2\x85" in data or b"\xe2\x80" in data:
        for raw, escaped in _LINE_BREAKERS:
            data = data.replace(raw, escaped)
    return data


def data_frame(payload: Any) -> bytes:
    """`data: <json>` frame (Chat Completions style, no event name)."""
    return b"data: " + line_safe(orjson.dumps(payload)) + b"\n\n"


def event_frame(event: str, payload: Any) -> bytes:
    """`event: <name>` + `data: <json>` frame (Responses API style)."""
    return b"event: " + event.encode() + b"\ndata: " + line_safe(orjson.dumps(payload)) + b"\n\n"


def error_payload(code: str, message: str, error_type: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def error_type_for(code: str) -> str:
    """The envelope `type` that goes with a gateway error code when the caller did not say."""
    if code.startswith("upstream"):
        return "upstream_error"
    if code == "insufficient_credits":
        return "insufficient_quota"
    if code == "rate_limit_exceeded":
        return "rate_limit_error"
    return "api_error"


class FrameTemplate:
    """A frame whose JSON is fixed except at `SLOT` placeholders, filled with pre-serialized JSON."""

    __slots__ = ("_parts",)

    def __init__(self, payload: Mapping[str, Any], *, event: str | None = None) -> None:
        head = b"event: " + event.encode() + b"\ndata: " if event else b"data: "
        parts = (head + line_safe(orjson.dumps(payload)) + b"\n\n").split(_SLOT_JSON)
        if len(parts) < 2:
            raise ValueError("a frame template needs at least one SLOT")
        self._parts = tuple(parts)

    def render(self, *values: bytes) -> bytes:
        """The frame with each SLOT replaced, in order, by one already-serialized JSON value."""
        parts = self._parts
        if len(values) != len(parts) - 1:
            raise ValueError(f"template has {len(parts) - 1} slots, got {len(values)} values")
        if len(values) == 1:
            return parts[0] + line_safe(values[0]) + parts[1]
        out = [parts[0]]
        for value, part in zip(values, parts[1:], strict=True):
            out.append(line_safe(value))
            out.append(part)
        return b"".join(out)
