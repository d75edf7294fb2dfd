"""Gemma: tools and images, no thinking. Its template has no system slot; Ollama folds system prompts in."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="gemma", vision=True)
