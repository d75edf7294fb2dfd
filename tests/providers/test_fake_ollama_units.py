"""Direct tests of the emulator's pure parts: name resolution, Go-compatible decoding, the deterministic model."""

from __future__ import annotations

import math
import re
from typing import Any

import jsonschema
import pytest

from providers.ollama.fake.asgi import FakeError
from providers.ollama.fake.catalogue import THINKING, TOOLS, Resolved, resolve
from providers.ollama.fake.clock import local_time, utc_now
from providers.ollama.fake.decode import DEFAULT_OPTIONS, Options, base64_error, keep_alive, parse_duration
from providers.ollama.fake.replies import Plan, generate, reply_tokens, sample


def resolved(name: str) -> Resolved | None:
    return resolve(name, {})


@pytest.mark.parametrize(("name", "base", "behaviours"), [
    ("qwen3", "qwen3", set()),
    ("QWEN3:LATEST", "qwen3", set()),
    ("registry.ollama.ai/library/qwen3:latest", "qwen3", set()),
    ("qwen3-coder", "qwen3-coder", set()),
    ("qwen3-coder-slow", "qwen3-coder", {"-slow"}),
    ("qwen3-think-slow", "qwen3", {"-think", "-slow"}),
    ("gemma4-midstream-error:latest", "gemma4", {"-midstream-error"}),
    ("deepseek-r1-error-500-no-usage", "deepseek-r1", {"-error-500", "-no-usage"}),
    ("nomic-embed-text-error-503", "nomic-embed-text", {"-error-503"}),
])
def test_names_resolve_to_a_base_and_behaviours(name: str, base: str, behaviours: set[str]) -> None:
    found = resolved(name)
    assert found is not None and found.spec.name == base and found.behaviours == behaviours


@pytest.mark.parametrize("name", ["", "foo", "qwen3:8b", "qwen3-fast", "-slow", "other/qwen3", "slow"])
def test_unknown_names_do_not_resolve(name: str) -> None:
    assert resolved(name) is None


def test_canonical_name_keeps_the_suffixes() -> None:
    found = resolved("Qwen3-Slow")
    assert found is not None and found.canonical == "qwen3-slow:latest"
    assert found.registry_name == "registry.ollama.ai/library/qwen3-slow:latest"


def test_suffixes_add_capabilities_but_never_to_the_embedder() -> None:
    llama = resolved("llama3.2-think-tools")
    embedder = resolved("nomic-embed-text-think")
    assert llama is not None and THINKING in llama.capabilities and TOOLS in llama.capabilities
    assert embedder is not None and THINKING not in embedder.capabilities


@pytest.mark.parametrize(("text", "position"), [
    ("iVBORw0KGgo=", None),
    ("YQ==\n", None),
    ("YW\r\nJj", None),
    ("", None),
    ("data:image/png;base64,AAAA", 4),
    ("abc", 0),
    ("abcde", 4),
    ("ab=c", 2),
    ("YQ==YQ==", 4),
    ("a===", 1),
    ("YQ=", 3),
    ("YWJj-A==", 4),
])
def test_base64_errors_are_where_go_reports_them(text: str, position: int | None) -> None:
    assert base64_error(text) == position


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("1h30m", 5400), ("0", 0), ("1.5s", 1.5),
                                               ("-1m", -60), ("250ms", 0.25)])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "soon", "1d", "m", ""])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(FakeError) as caught:
        parse_duration(text)
    assert caught.value.status == 400 and caught.value.message.startswith("time: ")


def test_schema_samples() -> None:
    assert sample({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
                   "required": ["b"]}) == {"b": 1}
    assert sample({"anyOf": [{"type": "boolean"}, {"type": "string"}]}) is True
    assert sample({"type": "array"}) == []
    assert sample({"type": ["null", "number"]}) == 1
    assert sample({"const": 3}) == 3
    assert sample("not a schema") == "x"


def test_reply_tokens_are_words_ending_in_a_period() -> None:
    tokens = reply_tokens("prompt", 5)
    assert len(tokens) == 5 and tokens[0][0].isupper() and tokens[-1].endswith(".")
    assert all(token.startswith(" ") and " " not in token[1:] for token in tokens[1:])
    assert reply_tokens("prompt", 0) == ()


def plan(**changes: object) -> Plan:
    defaults: dict[str, object] = {"seed_text": "abc", "prompt_tokens": 5, "tokens_per_reply": 10,
                                   "options": DEFAULT_OPTIONS}
    return Plan(**(defaults | changes))  # type: ignore[arg-type]


def test_stop_spanning_two_tokens_cuts_before_it_and_counts_through_it() -> None:
    tokens = reply_tokens("abc", 10)
    stop = tokens[2][-2:] + tokens[3][:3]
    turn = generate(plan(options=Options(stop=(stop,))))
    text = "".join(tokens)
    assert turn.text("content") == text[: text.index(stop)]
    assert turn.done_reason == "stop" and turn.eval_count == 4


def test_num_predict_counts_thinking_first() -> None:
    turn = generate(plan(think=True, tokens_per_reply=20, options=Options(num_predict=3)))
    assert [kind for kind, _ in turn.pieces] == ["thinking", "thinking", "thinking"]
    assert turn.done_reason == "length" and turn.eval_count == 3
    turn = generate(plan(think=True, tokens_per_reply=8, options=Options(num_predict=3)))
    assert [kind for kind, _ in turn.pieces] == ["thinking", "thinking", "content"]


def test_without_limits_the_turn_is_complete() -> None:
    turn = generate(plan(think=True))
    assert turn.done_reason == "stop" and turn.eval_count == 10 + 2
    assert turn.text("content") == "".join(reply_tokens("abc", 10))


def test_timestamps_look_like_go_rfc3339_nano() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?Z", utc_now())
    assert local_time(1_700_000_000_500_000_000).startswith("2023-11-")
    assert re.search(r"\.5(Z|[+-]\d\d:\d\d)$", local_time(1_700_000_000_500_000_000))


@pytest.mark.parametrize(("value", "seconds"), [(None, None), (-1, math.inf), ("-5m", math.inf), (0.5, 0.0),
                                                (90, 90.0), ("2h", 7200.0)])
def test_keep_alive_values(value: object, seconds: float | None) -> None:
    assert keep_alive({"keep_alive": value}) == seconds


def test_keep_alive_of_an_unsupported_type() -> None:
    with pytest.raises(FakeError) as caught:
        keep_alive({"keep_alive": [1]})
    assert caught.value.message == "Unsupported type: '[]interface {}'"


SCHEMAS = [
    {"type": "object", "properties": {"a": {"type": "string", "minLength": 3}, "n": {"type": "integer", "minimum": 5,
                                                                                    "maximum": 9}},
     "required": ["a", "n"], "additionalProperties": False},
    {"$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
     "type": "object", "properties": {"cities": {"type": "array", "items": {"$ref": "#/$defs/City"}, "minItems": 2}},
     "required": ["cities"]},
    {"type": "object", "properties": {"x": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0}]}},
     "required": ["x"]},
    {"allOf": [{"type": "object", "properties": {"k": {"enum": ["a", "b"]}}, "required": ["k"]}]},
    {"type": "object", "properties": {"v": {"type": ["string", "null"], "maxLength": 4}}, "required": ["v"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_schema_samples_conform(schema: dict[str, Any]) -> None:
    jsonschema.validate(sample(schema), schema)
