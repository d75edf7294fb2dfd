"""Qwen 3: hybrid thinking, a boolean `think` (no levels)."""

from __future__ import annotations

from providers.families.family import Family

FAMILY = Family(name="qwen")
