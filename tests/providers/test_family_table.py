"""The family table and what each family declares."""

from __future__ import annotations

import dataclasses
import pkgutil

import pytest

import providers.families as families
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


@pytest.mark.parametrize("name,tags", [("gemma", False), ("qwen", False), ("deepseek", True), ("llama", False),
                                       ("embedding", False), ("default", False)])
def test_families_keep_only_quirks(name: str, tags: bool) -> None:
    family = get_family(name)
    assert family.think_tags is tags
    # What a model can do comes from its node (/api/show), never from a family table.
    assert not {"thinking", "tools", "vision"} & {f.name for f in dataclasses.fields(Family)}


def test_only_the_embedding_family_serves_embeddings() -> None:
    assert [n for n, f in FAMILIES.items() if "embedding" in f.kinds] == ["embedding"]
    assert get_family("embedding").kinds == frozenset({"embedding"})


