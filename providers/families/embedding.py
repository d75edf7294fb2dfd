"""Embedding models: /api/embed only; no chat features at all."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="embedding", kinds=frozenset({"embedding"}), tools=False)
