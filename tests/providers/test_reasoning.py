"""reasoning_effort / reasoning.effort -> Ollama `think`, decided by the node's capabilities."""

from __future__ import annotations

import pytest

from providers.base import prepare
from providers.errors import InvalidRequest
from providers.families import Family, get_family
from providers.openai.native import think_value
from tests.providers.translate_helpers import chat_request, target

THINKS = frozenset({"completion", "tools", "thinking", "vision"})
PLAIN = frozenset({"completion", "tools"})


@pytest.mark.parametrize("effort,think", [("none", False), ("minimal", True), ("low", True), ("medium", True),
                                          ("high", True)])
def test_a_model_whose_node_says_it_thinks_takes_every_effort(effort: str, think: bool) -> None:
    # gemma4 thinks (its node says so), whatever the gemma family once claimed.
    gemma = target("gemma", capabilities=THINKS)
    assert think_value(effort, gemma, get_family("gemma"), "reasoning_effort") is think


@pytest.mark.parametrize("effort,think", [("none", False), ("minimal", "low"), ("low", "low"),
                                          ("medium", "medium"), ("high", "high"), ("xhigh", "max"), ("max", "max")])
def test_levelled_family_gets_levels(effort: str, think: bool | str) -> None:
    levelled = Family("gpt-oss", think_levels=True)
    assert think_value(effort, target("gpt-oss", capabilities=THINKS), levelled, "p") == think


def test_none_sends_nothing_to_a_model_known_not_to_think_and_other_efforts_are_refused() -> None:
    llama = target("llama", capabilities=PLAIN)
    assert think_value("none", llama, get_family("llama"), "p") is None
    with pytest.raises(InvalidRequest) as info:
        think_value("low", llama, get_family("llama"), "reasoning.effort")
    assert info.value.param == "reasoning.effort"
    assert "privaterouter/llama-test" in info.value.message


def test_unknown_capabilities_pass_the_effort_on() -> None:
    # The node has not said (old server): `none` still turns thinking off, a level turns it on.
    unknown = target("gemma")
    assert think_value("none", unknown, get_family("gemma"), "p") is False
    assert think_value("high", unknown, get_family("gemma"), "p") is True


def test_unknown_effort_is_refused_even_without_thinking() -> None:
    with pytest.raises(InvalidRequest):
        think_value("turbo", target("llama", capabilities=PLAIN), get_family("llama"), "p")


def test_absent_effort_sends_no_think() -> None:
    assert "think" not in prepare("chat.completions", chat_request(), target("gemma", capabilities=THINKS)).body


@pytest.mark.parametrize("body", [{"reasoning_effort": "none"}, {"reasoning": {"effort": "none"}},
                                  {"reasoning_effort": "none", "reasoning": {"effort": "none"}}])
def test_chat_takes_both_spellings(body: dict[str, object]) -> None:
    prepared = prepare("chat.completions", chat_request(**body), target("gemma", capabilities=THINKS))
    assert prepared.body["think"] is False


def test_chat_spellings_that_disagree_are_refused() -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare("chat.completions", chat_request(reasoning_effort="none", reasoning={"effort": "high"}),
                target("gemma", capabilities=THINKS))
    assert info.value.param == "reasoning.effort"


def test_responses_reasoning_effort_none_turns_thinking_off() -> None:
    body = {"model": "m", "input": "hi", "reasoning": {"effort": "none"}}
    assert prepare("responses", body, target("gemma", capabilities=THINKS)).body["think"] is False
    body = {"model": "m", "input": "hi", "reasoning": {"effort": "low"}}
    assert prepare("responses", body, target("gemma", capabilities=THINKS)).body["think"] is True


@pytest.mark.parametrize("reasoning,think", [({"enabled": False}, False), ({"enabled": True}, True),
                                             ({"enabled": True, "effort": "high"}, True)])
def test_openrouters_enabled_switch(reasoning: dict[str, object], think: bool) -> None:
    prepared = prepare("chat.completions", chat_request(reasoning=reasoning), target("gemma", capabilities=THINKS))
    assert prepared.body["think"] is think


@pytest.mark.parametrize("reasoning,param", [({"enabled": False, "effort": "high"}, "reasoning.enabled"),
                                             ({"max_tokens": 100}, "reasoning.max_tokens"),
                                             ({"exclude": "yes"}, "reasoning.exclude")])
def test_reasoning_object_conflicts_are_refused(reasoning: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        prepare("chat.completions", chat_request(reasoning=reasoning), target("gemma", capabilities=THINKS))
    assert info.value.param == param


def test_exclude_hides_the_reasoning_text_but_not_the_thinking() -> None:
    from providers.base import render_response, stream_encoder
    from tests.providers.translate_helpers import ollama_chat

    gemma = target("gemma", capabilities=THINKS)
    prepared = prepare("chat.completions", chat_request(reasoning={"effort": "low", "exclude": True}), gemma)
    assert prepared.body["think"] is True
    answer, usage = render_response(prepared, gemma, ollama_chat("A", thinking="hm"), response_id="c", created=0)
    assert "reasoning" not in answer["choices"][0]["message"] and usage.output_tokens == 7
    streamed = prepare("chat.completions", chat_request(stream=True, reasoning={"exclude": True}), gemma)
    encoder = stream_encoder(streamed, gemma, response_id="c", created=0)
    assert b"hm" not in encoder.feed(ollama_chat("A", thinking="hm", done=False))
