"""SSE framing helpers and precomputed frame templates."""

from __future__ import annotations

import orjson
import pytest

from providers.sse import DONE, SLOT, FrameTemplate, data_frame, error_payload, error_type_for, event_frame
from tests.providers.translate_helpers import sse_events


def test_data_frame() -> None:
    assert data_frame({"a": "é"}) == b'data: {"a":"\xc3\xa9"}\n\n'


def test_event_frame() -> None:
    assert event_frame("response.created", {"x": 1}) == b'event: response.created\ndata: {"x":1}\n\n'


def test_done_frame() -> None:
    assert sse_events(DONE) == [(None, "[DONE]")]


def test_template_with_one_slot_matches_a_full_dump() -> None:
    template = FrameTemplate({"id": "c1", "delta": {"content": SLOT}, "finish_reason": None})
    text = 'He said "hi"\n</think> \u2028 \x00'
    assert template.render(orjson.dumps(text)) == data_frame({"id": "c1", "delta": {"content": text},
                                                             "finish_reason": None})


def test_template_with_two_slots_and_an_event_name() -> None:
    template = FrameTemplate({"type": "d", "delta": SLOT, "sequence_number": SLOT}, event="d")
    assert template.render(b'"x"', b"7") == event_frame("d", {"type": "d", "delta": "x", "sequence_number": 7})


def test_text_spelling_slot_is_not_a_slot() -> None:
    template = FrameTemplate({"model": "slot", "v": SLOT})
    assert orjson.loads(sse_events(template.render(b"1"))[0][1]) == {"model": "slot", "v": 1}


def test_template_needs_a_slot_and_the_right_number_of_values() -> None:
    with pytest.raises(ValueError):
        FrameTemplate({"a": 1})
    with pytest.raises(ValueError):
        FrameTemplate({"a": SLOT}).render(b"1", b"2")


def test_error_payload_is_openai_shaped() -> None:
    assert error_payload("upstream_error", "boom", "upstream_error") == {
        "error": {"message": "boom", "type": "upstream_error", "code": "upstream_error", "param": None}}


@pytest.mark.parametrize("code,kind", [("upstream_timeout", "upstream_error"), ("upstream_error", "upstream_error"),
                                       ("insufficient_credits", "insufficient_quota"),
                                       ("rate_limit_exceeded", "rate_limit_error"), ("internal_error", "api_error")])
def test_error_type_for(code: str, kind: str) -> None:
    assert error_type_for(code) == kind
