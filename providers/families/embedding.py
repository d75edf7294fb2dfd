"""Embedding models: served on /api/embed only."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="embedding", kinds=frozenset({"embedding"}))
