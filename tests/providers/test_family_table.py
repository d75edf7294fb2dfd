"""The family table and what each family declares."""

from __future__ import annotations

import pkgutil

import pytest

import providers.families as families
from providers.errors import InvalidRequest
from providers.families import DEFAULT, FAMILIES, Family, get_family


def test_every_family_module_is_registered_under_its_name() -> None:
    modules = {m.name for m in pkgutil.iter_modules(families.__path__)} - {"family", "default"}
    assert modules == set(FAMILIES)
    assert all(FAMILIES[name].name == name for name in FAMILIES)


@pytest.mark.parametrize("name", ["gemma", "qwen", "deepseek", "llama", "embedding"])
def test_known_families(name: str) -> None:
    assert get_family(name) is FAMILIES[name]


def test_lookup_ignores_case() -> None:
    assert get_family("Qwen") is FAMILIES["qwen"]


@pytest.mark.parametrize("name", ["mistral", "", "gpt-oss"])
def test_unknown_family_is_the_default(name: str) -> None:
    assert get_family(name) is DEFAULT


@pytest.mark.parametrize("name,thinking,tools,vision,tags", [
    ("gemma", False, True, True, False), ("qwen", True, True, False, False), ("deepseek", True, True, False, True),
    ("llama", False, True, False, False), ("embedding", False, False, False, False),
    ("default", False, True, False, False)])
def test_capabilities(name: str, thinking: bool, tools: bool, vision: bool, tags: bool) -> None:
    family = get_family(name)
    assert (family.thinking, family.tools, family.vision, family.think_tags) == (thinking, tools, vision, tags)


def test_only_the_embedding_family_serves_embeddings() -> None:
    assert [n for n, f in FAMILIES.items() if "embedding" in f.kinds] == ["embedding"]
    assert get_family("embedding").kinds == frozenset({"embedding"})


@pytest.mark.parametrize("effort,think", [("none", False), ("minimal", True), ("low", True), ("medium", True),
                                          ("high", True)])
def test_bool_thinking_family(effort: str, think: bool) -> None:
    assert get_family("qwen").think_for(effort, "reasoning_effort") is think


@pytest.mark.parametrize("effort,think", [("none", False), ("minimal", "low"), ("low", "low"),
                                          ("medium", "medium"), ("high", "high"), ("xhigh", "max"), ("max", "max")])
def test_levelled_thinking_family(effort: str, think: bool | str) -> None:
    assert Family("gpt-oss", thinking=True, think_levels=True).think_for(effort, "p") == think


def test_family_without_thinking() -> None:
    llama = get_family("llama")
    assert llama.think_for("none", "p") is None
    with pytest.raises(InvalidRequest) as info:
        llama.think_for("low", "reasoning.effort")
    assert info.value.param == "reasoning.effort"


def test_unknown_effort_is_refused_even_without_thinking() -> None:
    with pytest.raises(InvalidRequest):
        get_family("llama").think_for("turbo", "p")
