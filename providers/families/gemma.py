"""Gemma: its template has no system slot; Ollama folds system prompts into the first user turn."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="gemma")
