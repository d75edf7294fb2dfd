"""Model families by the registry's `family` name. Adding one: a module with FAMILY, and a line below."""

from __future__ import annotations

from providers.families import deepseek, default, embedding, gemma, llama, qwen
from providers.families.family import Family

FAMILIES: dict[str, Family] = {
    "gemma": gemma.FAMILY,
    "qwen": qwen.FAMILY,
    "deepseek": deepseek.FAMILY,
    "llama": llama.FAMILY,
    "embedding": embedding.FAMILY,
}

DEFAULT = default.FAMILY


def get_family(name: str) -> Family:
    """The family registered under `name` (case-insensitive), else the default family."""
    return FAMILIES.get(name.lower(), DEFAULT)


__all__ = ["DEFAULT", "FAMILIES", "Family", "get_family"]
