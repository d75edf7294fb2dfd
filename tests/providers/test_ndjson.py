from __future__ import annotations

from typing import Any

import pytest

from providers.errors import UpstreamProtocolError
from providers.ollama.ndjson import NDJSONDecoder

LINES: list[dict[str, Any]] = [
    {"model": "qwen3", "message": {"role": "assistant", "content": "", "thinking": "Let me"}, "done": False},
    {"model": "qwen3", "message": {"role": "assistant", "content": "Grüße, 世界 🎉"}, "done": False},
    {"model": "qwen3", "message": {"role": "assistant", "content": 'a\\nb "q"'}, "done": False},
    {"model": "qwen3", "message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 42},
]
WIRE = (
    b'{"model":"qwen3","message":{"role":"assistant","content":"","thinking":"Let me"},"done":false}\n'
    + '{"model":"qwen3","message":{"role":"assistant","content":"Grüße, 世界 🎉"},"done":false}\n'.encode()
    + b'{"model":"qwen3","message":{"role":"assistant","content":"a\\\\nb \\"q\\""},"done":false}\n'
    + b'{"model":"qwen3","message":{"role":"assistant","content":""},"done":true,"eval_count":42}\n'
)


def feed(decoder: NDJSONDecoder, pieces: list[bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for piece in pieces:
        out.extend(decoder.decode(piece))
    out.extend(decoder.flush())
    return out


def test_whole_input_at_once() -> None:
    assert feed(NDJSONDecoder(), [WIRE]) == LINES


def test_one_line_per_chunk() -> None:
    pieces = [line + b"\n" for line in WIRE.split(b"\n")[:-1]]
    decoder = NDJSONDecoder()
    assert [decoder.decode(piece) for piece in pieces] == [[line] for line in LINES]


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_split_at_every_byte_boundary(cut: int) -> None:
    assert feed(NDJSONDecoder(), [WIRE[:cut], WIRE[cut:]]) == LINES


def test_split_into_single_bytes() -> None:
    assert feed(NDJSONDecoder(), [WIRE[i : i + 1] for i in range(len(WIRE))]) == LINES


def test_object_is_returned_only_once_its_newline_arrives() -> None:
    decoder = NDJSONDecoder()
    assert decoder.decode(b'{"done":true}') == []
    assert decoder.decode(b"\n") == [{"done": True}]


def test_flush_parses_a_last_line_without_newline() -> None:
    decoder = NDJSONDecoder()
    assert decoder.decode(b'{"a":1}\n{"b":') == [{"a": 1}]
    assert decoder.decode(b"2}") == []
    assert decoder.flush() == [{"b": 2}]
    assert decoder.flush() == []


def test_blank_lines_and_crlf_are_tolerated() -> None:
    assert feed(NDJSONDecoder(), [b'\n{"a":1}\r\n\r\n  \n{"b":2}\n']) == [{"a": 1}, {"b": 2}]


def test_empty_chunks_are_harmless() -> None:
    assert feed(NDJSONDecoder(), [b"", b'{"a":', b"", b"1}\n", b""]) == [{"a": 1}]


def test_invalid_json_line_raises() -> None:
    with pytest.raises(UpstreamProtocolError, match="invalid JSON"):
        NDJSONDecoder().decode(b'{"a":1}\nnot json\n')


def test_truncated_tail_raises_on_flush() -> None:
    decoder = NDJSONDecoder()
    decoder.decode(b'{"a":1}\n{"b":')
    with pytest.raises(UpstreamProtocolError):
        decoder.flush()


def test_non_object_line_raises() -> None:
    with pytest.raises(UpstreamProtocolError, match="not an object"):
        NDJSONDecoder().decode(b"[1, 2]\n")


def test_invalid_utf8_raises() -> None:
    with pytest.raises(UpstreamProtocolError):
        NDJSONDecoder().decode(b'{"a":"\xff"}\n')


def test_unbounded_line_is_refused() -> None:
    decoder = NDJSONDecoder(max_line=10)
    decoder.decode(b'{"a":"12')
    with pytest.raises(UpstreamProtocolError, match="longer than 10 bytes"):
        decoder.decode(b"345678")
