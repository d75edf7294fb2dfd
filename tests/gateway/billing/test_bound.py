"""The prompt bound: one token per UTF-8 byte plus template, tool and image overheads, learned upward."""

from __future__ import annotations

from gateway.billing.bound import (
    IMAGE_TOKENS,
    TOOL_SCHEMA_FACTOR,
    TURN_TOKENS,
    PromptBounds,
    prompt_shape,
    show_overhead,
)


def test_chat_text_counts_every_byte_and_turn() -> None:
    shape = prompt_shape({"messages": [{"role": "system", "content": "Sé bref."},
                                       {"role": "user", "content": "x " * 12000}]})
    assert shape.text_bytes == len("system") + len("Sé bref.".encode()) + len("user") + 24000
    assert (shape.turns, shape.images) == (2, 0)
    assert shape.base_tokens() >= 12004  # beats the bytes/3 estimate that a plain "x x x" prompt broke


def test_tools_images_generate_and_embed_fields_count() -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    shape = prompt_shape({"messages": [{"role": "user", "content": "", "images": ["aGk=", "aGk="]}], "tools": tools})
    assert shape.images == 2 and shape.text_bytes > TOOL_SCHEMA_FACTOR * 60
    generate = prompt_shape({"prompt": "abc", "system": "de", "suffix": "f"})
    assert (generate.text_bytes, generate.turns) == (6, 3)
    embed = prompt_shape({"input": ["ab", "cde"]})
    assert (embed.text_bytes, embed.turns) == (5, 2)
    assert prompt_shape({"input": "abc"}).turns == 1


def test_an_observed_template_overhead_raises_the_bound_and_never_lowers_it() -> None:
    bounds = PromptBounds()
    hi = prompt_shape({"messages": [{"role": "user", "content": "hi"}]})
    assert bounds.bound("m", hi) == hi.base_tokens() == 6 + TURN_TOKENS
    bounds.observe("m", hi, 3000)  # a Modelfile SYSTEM prompt
    assert bounds.bound("m", hi) == 3000 and bounds.overhead("m") == 3000 - hi.base_tokens()
    bounds.observe("m", hi, 5)  # a cached prompt counts less: the bound stays
    assert bounds.bound("m", hi) == 3000
    assert bounds.bound("other", hi) == hi.base_tokens()  # learned per model


def test_an_observed_image_cost_raises_the_per_image_bound() -> None:
    bounds = PromptBounds()
    one = prompt_shape({"messages": [{"role": "user", "content": "what is it?", "images": ["aGk="]}]})
    assert bounds.bound("vision", one) == one.base_tokens() + IMAGE_TOKENS
    bounds.observe("vision", one, one.base_tokens() + 2000)
    three = prompt_shape({"messages": [{"role": "user", "content": "what is it?", "images": ["aGk="] * 3}]})
    assert bounds.bound("vision", three) == three.base_tokens() + 3 * 2000
    assert bounds.overhead("vision") == 0  # the excess went to the images, not the template


def test_a_modelfile_system_prompt_and_messages_seed_the_overhead() -> None:
    show = {"system": "Tu es un assistant très bref.", "template": "{{ .Prompt }}",
            "messages": [{"role": "user", "content": "salut"}, {"role": "assistant", "content": "bonjour"}]}
    overhead = show_overhead(show)
    assert overhead == len("Tu es un assistant très bref.".encode()) + 5 + 7 + 2 * TURN_TOKENS
    assert show_overhead({"template": "{{ .Prompt }}"}) == 0
    bounds = PromptBounds()
    hi = prompt_shape({"messages": [{"role": "user", "content": "hi"}]})
    bounds.seed("m", overhead)
    assert bounds.bound("m", hi) == hi.base_tokens() + overhead
    bounds.seed("m", 1)  # never lowered
    assert bounds.overhead("m") == overhead
